# Thin wrappers over ./dev, which does all set-up itself.
.PHONY: run test bench
run:
	./dev run
test:
	./dev test
bench:
	./dev bench

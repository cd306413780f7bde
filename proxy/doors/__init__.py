"""The front doors: where clients and front ends reach a running gateway.

``http`` is the streamable-HTTP door (tokens, Origin, Host, session ownership), with
``resume``, its event store for resumable streams; ``local`` is the Unix socket (a
named pipe on Windows, ``winpipe``): the ``connect`` door for stdio clients and the
control server;
``fastlane`` answers plain tools/call lines on that door without the SDK's loop;
``serve`` assembles a gateway with its doors (``lockgate serve``, and the app's host).
"""

"""What Lockgate reads and writes on disk, besides the policy and the log.

``paths`` says where everything lives; ``servers`` parses servers.json and
``servers_edit`` changes one server in it; ``secrets`` is the OS keyring, where
``oauth_store`` keeps a remote server's OAuth sign-in; ``tokens`` the
HTTP door's client tokens; ``runinfo`` the running gateway's address; ``watch`` reloads a
file the moment it changes; ``autostart`` the login entry; ``atomic`` writes files whole;
``jsontext`` finds and replaces values in a JSON text.
Kept light: ``lockgate connect`` imports ``paths`` and ``runinfo`` on every launch.
"""

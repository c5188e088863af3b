"""The `provisioner` command and its subcommands, the dev stack and CSV onboarding: the
composition root of every process but the API. May import anything in `worker`."""

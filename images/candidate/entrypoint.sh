#!/bin/sh
# The candidate image's entrypoint: refuse to start on an sglang whose methods and signatures differ from
# the plugin's manifest (the differences go to stderr, exit 1), else run the command.
set -e
python3 -m sglang_plugin check --installed >&2
exec "$@"

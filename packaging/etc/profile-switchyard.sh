# Switchyard: the CLI (switchyard-control show, apply, drain, ...) finds the instance's segment
# and token in /run/switchyard, where the packaged units keep them. Members of the `switchyard`
# group may read the token; others may still read /v1/state when they can reach the API.
export SWITCHYARD_SHM_DIR=/run/switchyard

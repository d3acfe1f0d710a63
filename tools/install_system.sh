#!/usr/bin/env bash
# Installs the system packages the engine needs (Debian/Ubuntu). As root it runs apt-get;
# otherwise it prints the exact command to run. Idempotent: does nothing when all are present.
set -euo pipefail
PKGS=(python3-venv libportaudio2 portaudio19-dev libsndfile1 pulseaudio pulseaudio-utils
      libasound2-plugins alsa-utils ffmpeg chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "Please install the equivalents of: ${missing[*]} (PortAudio, libsndfile, PulseAudio, FFmpeg)" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "Missing system packages. Run, then retry:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

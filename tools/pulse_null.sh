# Source this file: makes sure a PulseAudio server runs with a null sink called
# "virtual_speaker" as the default output and its monitor as the default input, so the real
# PortAudio path (ALSA -> pulse plugin -> PulseAudio) works on machines without sound hardware.
# Idempotent. Leaves a server that was already running alone, apart from loading the sink.
_pulse_ok() { pactl info >/dev/null 2>&1; }
# A start right after a server was killed can fail for a moment (its lock is still held):
# retry for up to about 10 s.
for _try in 1 2 3 4 5 6 7 8 9 10; do
  _pulse_ok && break
  pulseaudio --daemonize=yes --exit-idle-time=-1 --disallow-exit=yes -n \
    --load="module-native-protocol-unix" --load="module-always-sink" \
    >/dev/null 2>&1 || true
  for _i in $(seq 1 10); do _pulse_ok && break; sleep 0.1; done
done
if _pulse_ok; then
  if ! pactl list short sinks 2>/dev/null | grep -q virtual_speaker; then
    pactl load-module module-null-sink sink_name=virtual_speaker \
      sink_properties=device.description=VirtualSpeaker >/dev/null
  fi
  pactl set-default-sink virtual_speaker
  pactl set-default-source virtual_speaker.monitor
  export AUDIO_ENGINE_VIRTUAL_SINK=virtual_speaker
else
  echo "warning: PulseAudio could not be started; tests that need the audio path will skip" >&2
fi

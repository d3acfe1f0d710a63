"""sound.yamnet: YAMNet front end, model runner, decisions, evidence clips and webhook."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.dsp.yamnet_features import YamnetFeatures, padded_length, reference_patches
from engine.errors import EngineError, GraphError, NegotiationError
from engine.events import NodeError, SoundEventStarted, SoundEventStopped, SoundScores
from engine.node import NodeIO
from engine.testing import run_node

from .conftest import EVENTS as EVENTS_DIR
from .conftest import REPO, Player, load_mono

SMOKE_ALARM = EVENTS_DIR / "sherpa-audiotagging__7.wav"  # 16 kHz mono, 2.8 s
BABY_CRY = EVENTS_DIR / "sherpa-audiotagging__6.wav"  # 16 kHz mono, 8.7 s


def _model_available() -> bool:
    try:
        from engine.models.manifest import model_file

        model_file("yamnet", "model.onnx")
        model_file("yamnet", "yamnet_class_map.csv")
        return True
    except EngineError:
        return False


needs_model = pytest.mark.skipif(
    not _model_available(), reason="YAMNet not installed: run `audio-engine models fetch yamnet`")
needs_clips = pytest.mark.skipif(not SMOKE_ALARM.exists() or not BABY_CRY.exists(),
                                 reason=f"labelled clips not found under {EVENTS_DIR}")


def _clip(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == 16000
    return x.mean(axis=1)


def _node(node_id: str = "mon", **kw):
    from engine.nodes.sound_events import SoundEvents

    return SoundEvents(node_id, SoundEvents.Params(**kw))


# ------------------------------------------------------------------------------------ features


def _numpy_recipe(x: np.ndarray, patch_hop: int = 48) -> np.ndarray:
    """YAMNet features.py written out independently: no centring, periodic Hann 400, FFT 512,
    |X|, HTK mel 125-7500 Hz x 64 (DC bin zeroed), log(mel + 0.001), 96-frame patches, and
    pad_waveform's end padding."""
    x = np.asarray(x, np.float64)
    min_n = 15600
    hop_n = patch_hop * 160
    n = max(len(x), min_n)
    n = min_n + int(np.ceil((n - min_n) / hop_n)) * hop_n
    x = np.concatenate([x, np.zeros(n - len(x))])
    n_frames = 1 + (len(x) - 400) // 160
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([x[i * 160: i * 160 + 400] * win for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, 512))

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    bins = mel(np.linspace(0, 8000, 257)[1:])[:, None]
    e = np.linspace(mel(125.0), mel(7500.0), 66)
    w = np.maximum(0, np.minimum((bins - e[:-2]) / (e[1:-1] - e[:-2]),
                                 (e[2:] - bins) / (e[2:] - e[1:-1])))
    w = np.vstack([np.zeros((1, 64)), w])
    logmel = np.log(mag @ w + 0.001)
    n_p = 1 + (len(logmel) - 96) // patch_hop
    return np.stack([logmel[p * patch_hop: p * patch_hop + 96] for p in range(n_p)])


def _stream(feats: YamnetFeatures, x: np.ndarray, block: int) -> np.ndarray:
    out = []
    for i in range(0, len(x), block):
        out.extend(p.copy() for _, p in feats.push(x[i:i + block]))
    out.extend(p.copy() for _, p in feats.finish())
    return np.stack(out)


def _test_signal(seconds: float = 2.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return (chirp + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("block", [1, 160, 1000, 40000])
def test_features_match_numpy_recipe(block):
    x = _test_signal(1.5 if block == 1 else 2.3)
    want = _numpy_recipe(x)
    got = _stream(YamnetFeatures(), x, block)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 1e-4
    assert np.max(np.abs(reference_patches(x) - want)) < 1e-9


def test_features_have_no_centring_and_patch_hop():
    x = _test_signal(2.0, seed=1)
    feats = YamnetFeatures(patch_hop=25)
    got = _stream(feats, x, 777)
    want = _numpy_recipe(x, patch_hop=25)
    assert got.shape == want.shape and np.max(np.abs(got - want)) < 1e-4
    # frame 0 is samples 0..399 only: changing sample 400 must not change it
    y = x.copy()
    y[400:] = 0
    f0 = _stream(YamnetFeatures(), y[:15600], 15600)[0, 0]
    assert np.max(np.abs(f0 - want[0, 0])) < 1e-4
    assert padded_length(15600) == 15600 and padded_length(15601) == 15600 + 7680


# ------------------------------------------------------------------------------------ model


@needs_model
def test_quantisation_parameters_read_from_model():
    import onnx
    from onnx import numpy_helper

    from engine.models.manifest import model_file
    from engine.models.yamnet import YamnetModel

    path = model_file("yamnet", "model.onnx")
    proto = onnx.load(str(path), load_external_data=False)
    init = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer
            if i.name in ("audio_scale", "audio_zero_point", "class_scores_scale",
                          "class_scores_zero_point")}
    m = YamnetModel(path)
    assert m.quantised and m.apply_sigmoid  # uint8 in, logits out
    assert m.input_scale == pytest.approx(float(init["audio_scale"]))
    assert m.input_zero_point == int(init["audio_zero_point"])
    assert m.output_scale == pytest.approx(float(init["class_scores_scale"]))
    assert m.output_zero_point == int(init["class_scores_zero_point"])
    patch = np.linspace(-8, 7, 96 * 64, dtype=np.float32).reshape(96, 64)
    q = m.quantise(patch)
    want = np.clip(np.rint(patch / np.float32(init["audio_scale"])) + init["audio_zero_point"],
                   0, 255).astype(np.uint8)
    assert np.array_equal(q, want)
    s = m.scores(patch)
    assert s.shape == (521,) and s.dtype == np.float32 and np.all((s >= 0) & (s <= 1))


@needs_model
def test_quantised_scores_come_in_steps_read_from_the_model():
    """Every score is one of score_steps(), the sigmoid of the model's own output scale x
    (code - zero point); the steps the node's docs state are those of the default model."""
    from engine.models.manifest import model_file
    from engine.models.yamnet import YamnetModel
    from engine.nodes.sound_events import STEPS_DOC, SoundEvents

    m = YamnetModel(model_file("yamnet", "model.onnx"))
    steps = m.score_steps()
    k = np.arange(-4, 5)
    want = 1 / (1 + np.exp(-m.output_scale * k))
    assert np.allclose([steps[np.argmin(abs(steps - w))] for w in want], want, atol=1e-6)
    assert np.all(np.diff(steps) > 0) and 0.5 in steps
    rng = np.random.default_rng(1)
    for _ in range(3):
        s = m.scores(rng.uniform(-7, 3, (96, 64)).astype(np.float32))
        assert np.isin(s, steps).all()
    near = [float(round(v, 3)) for v in steps if 0.09 < v < 0.96]
    assert STEPS_DOC == "... " + ", ".join(f"{v:g}" for v in near) + " ..."
    assert STEPS_DOC in SoundEvents.Params.__dataclass_fields__["on_threshold"].metadata["doc"]


def test_float_model_detected_from_input_dtype(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engine.models.yamnet import YamnetModel

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((96 * 64, 521)).astype(np.float32) * 0.01,
                                "w")
    shape = numpy_helper.from_array(np.array([1, 96 * 64], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Reshape", ["patch", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["scores"])],
        "tiny_yamnet",
        [helper.make_tensor_value_info("patch", TensorProto.FLOAT, [1, 1, 96, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 521])],
        [w, shape])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "float_yamnet.onnx"
    onnx.save(model, str(path))
    cmap = tmp_path / "yamnet_class_map.csv"
    cmap.write_text("index,mid,display_name\n" +
                    "".join(f"{i},/m/{i},class {i}\n" for i in range(521)))
    m = YamnetModel(path)
    assert not m.quantised and not m.apply_sigmoid  # the graph ends in a Sigmoid already
    patch = rng.standard_normal((96, 64)).astype(np.float32)
    want = 1 / (1 + np.exp(-(patch.reshape(1, -1) @ numpy_helper.to_array(w))))
    assert np.allclose(m.scores(patch), want[0], atol=1e-5)
    assert m.score_steps() is None  # continuous scores: no threshold lies between steps


# ------------------------------------------------------------------------------------ node


@needs_model
@needs_clips
def test_scores_and_events_do_not_depend_on_block_size():
    x = _clip(SMOKE_ALARM)
    runs = []
    for block in (160, 480, 1000, 4096):
        node = _node(emit_scores=True)
        r = run_node(node, x, 16000, block)
        node.close()
        runs.append((r.events["scores"], r.events["events"]))
    ref_scores, ref_events = runs[0]
    n_patches = 1 + (padded_length(len(x), 24) - 15600) // (24 * 160)  # default hop 0.24 s
    assert len(ref_scores) == n_patches and all(isinstance(e, SoundScores) for e in ref_scores)
    assert [type(e) for e in ref_events] == [SoundEventStarted, SoundEventStopped]
    assert ref_events[0].group == "alarm"
    for scores, events in runs[1:]:
        assert scores == ref_scores  # dataclass equality ignores wall_time
        assert events == ref_events


@needs_model
@needs_clips
@pytest.mark.parametrize("clip, group", [(SMOKE_ALARM, "alarm"), (BABY_CRY, "baby")])
def test_streaming_decision_equals_offline_pass(clip, group):
    from engine.nodes.sound_events import offline_decisions

    x = _clip(clip)
    node = _node(emit_scores=True, scores_top_k=521)
    r = run_node(node, x, 16000, 480)
    streamed = [(type(e).__name__, e.group, e.sample) for e in r.events["events"]]
    model, n_groups = node._model, len(node._decider.names)
    off_scores, decisions = offline_decisions(model, x, node.params)
    node.close()
    offline = [("SoundEventStarted" if d.kind == "started" else "SoundEventStopped", d.group,
                d.sample) for d in decisions]
    assert streamed == offline
    assert group in {g for _, g, _ in streamed}
    # clip level: the mean score per class over all patches ranks the same top class
    names = model.class_names
    per_patch = np.zeros((len(r.events["scores"]), 521), np.float32)
    for i, ev in enumerate(r.events["scores"]):
        for name, v in ev.scores[n_groups:]:
            per_patch[i, names.index(name)] = v
    assert per_patch.shape == off_scores.shape
    assert np.argmax(per_patch.mean(0)) == np.argmax(off_scores.mean(0))
    assert np.max(np.abs(per_patch - off_scores)) <= 0.2  # one quantisation step at most


# ------------------------------------------------------------------------------------ decisions


def _decider(**kw):
    from engine.dsp.sound_event_logic import EventDecider

    args = dict(groups={"g": [0]}, class_names=["a", "b"], thresholds={"g": (0.5, 0.3)},
                hop_samples=3840, smoothing="hold", smoothing_patches=3)
    args.update(kw)
    return EventDecider(**args)


def test_hold_smoothing_opens_on_the_raw_score_and_bridges_a_dip():
    seq = [0.0, 0.0, 0.9, 0.9, 0.1, 0.8, 0.8, 0.0, 0.0, 0.0]
    dec = _decider()
    got = []
    for p, v in enumerate(seq):
        got += dec.update(p, np.array([v, 0.0], np.float32))
    # opens at patch 2 on its raw 0.9 (the mean of 0, 0, 0.9 would still be below 0.5) and is
    # stamped on the grid: the last hop of patch 2; the dip at patch 4 (mean 0.63) is bridged;
    # the mean first falls below 0.3 at patch 8 (0.8, 0, 0): stop = 8 H - one hop (window centre)
    assert [(d.kind, d.sample) for d in got] == [("started", 2 * 3840 + 15600 - 3840),
                                                 ("stopped", 8 * 3840 - 3840)]
    # without smoothing the dip splits the sound in two
    dec = _decider(smoothing="none")
    kinds = [d.kind for p, v in enumerate(seq)
             for d in dec.update(p, np.array([v, 0.0], np.float32))]
    assert kinds == ["started", "stopped", "started", "stopped"]


def _frames_with_onset(n_frames: int, onset: int, bands=slice(10, 26)) -> np.ndarray:
    rng = np.random.default_rng(3)
    noise = 0.05 * rng.standard_normal((n_frames, 64))
    f = (np.full((n_frames, 64), -6.0) + noise).astype(np.float32)
    f[onset:, bands] += 5.0  # about 43 dB up in 16 bands
    return f


@pytest.mark.parametrize("onset", [250, 271, 300])
def test_onset_localisation_stamps_the_rise_in_the_audio(onset):
    """A sound starting at 10 ms frame ``onset``: the patch-grid stamp only knows the patch that
    first scores it; the localised stamp is the rise itself (160 f + 240)."""
    hf = 24
    frames = _frames_with_onset(600, onset)
    # the group scores once half a patch holds the sound
    first = next(p for p in range(100) if p * hf + 96 - onset >= 48)

    def run(search_s):
        dec = _decider(hop_samples=hf * 160, onset_search_s=search_s)
        out = []
        for p in range(20):
            v = 0.9 if p >= first else 0.0
            out += dec.update(p, np.array([v, 0.0], np.float32), frames[p * hf:p * hf + 96])
        return [d.sample for d in out if d.kind == "started"]

    grid = first * hf * 160 + 15600 - hf * 160
    assert run(0.0) == [grid]
    assert run(0.6) == [onset * 160 + 240]
    assert abs(grid - onset * 160) > 0.3 * 16000  # what the localisation fixes


def test_onset_localisation_keeps_the_grid_stamp_without_a_rise():
    hf = 24
    frames = np.full((600, 64), -6.0, np.float32)  # the "sound" does not change the level
    dec = _decider(hop_samples=hf * 160, onset_search_s=0.6)
    out = []
    for p in range(20):
        v = 0.9 if p >= 10 else 0.0
        out += dec.update(p, np.array([v, 0.0], np.float32), frames[p * hf:p * hf + 96])
    assert [d.sample for d in out if d.kind == "started"] == [10 * hf * 160 + 15600 - hf * 160]


def test_default_per_group_thresholds_and_their_overrides():
    from engine.nodes.sound_events import DEFAULT_THRESHOLDS, SoundEvents, decider_for

    names = ["Dog", "Siren"] + [f"c{i}" for i in range(519)]
    groups = {"dog": ["Dog"], "alarm": ["Siren"]}

    def th(**kw):
        d = decider_for(SoundEvents.Params(groups=groups, **kw), names, 24)
        return {g: (float(d.on[i]), float(d.off[i])) for i, g in enumerate(d.names)}

    assert DEFAULT_THRESHOLDS["dog"] == [0.3, 0.15]
    assert th() == {"dog": pytest.approx((0.3, 0.15)), "alarm": pytest.approx((0.5, 0.3))}
    assert th(thresholds={"dog": [0.7, 0.4]})["dog"] == pytest.approx((0.7, 0.4))
    assert th(default_thresholds=False)["dog"] == pytest.approx((0.5, 0.3))


def _onset(x: np.ndarray) -> int:
    """First 10 ms frame within 20 dB of the loudest (the benchmark's truth)."""
    n = len(x) // 160
    e = np.mean(x[: n * 160].reshape(n, 160).astype(np.float64) ** 2, axis=1)
    return int(np.argmax(e >= e.max() * 0.01)) * 160


@needs_model
@needs_clips
def test_event_start_at_the_sound_onset_on_the_audio_clock():
    """The smoke alarm 3.3 s into quiet room tone: the start is within 30 ms of its onset, the
    same for any block size, equal to the offline pass, and moves exactly with the audio."""
    from engine.nodes.sound_events import offline_decisions

    rng = np.random.default_rng(7)
    alarm = _clip(SMOKE_ALARM)
    lead = 3 * 16000 + 5317  # not on the 10 ms grid
    x = (1e-3 * rng.standard_normal(lead + len(alarm) + 16000)).astype(np.float32)
    x[lead:lead + len(alarm)] += alarm
    truth = lead + _onset(alarm)
    starts = {}
    for block in (160, 480, 4096):
        node = _node()
        r = run_node(node, x, 16000, block)
        starts[block] = [(e.group, e.sample) for e in r.events["events"]
                         if isinstance(e, SoundEventStarted)]
        if block == 480:
            _, offline = offline_decisions(node._model, x, node.params)
            assert [(d.group, d.sample) for d in offline if d.kind == "started"] == starts[480]
        node.close()
    assert starts[160] == starts[480] == starts[4096]
    (group, start), = starts[480]
    assert group == "alarm" and abs(start - truth) <= 0.03 * 16000, (start - truth) / 16000
    # the patch grid alone stamps it later
    node = _node(onset_search_s=0.0)
    grid = [e.sample for e in run_node(node, x, 16000, 480).events["events"]
            if isinstance(e, SoundEventStarted)]
    node.close()
    assert grid[0] - truth > 0.05 * 16000
    # two patch hops of extra room tone in front: every stamp moves by exactly that much
    shift = 2 * 3840
    y = np.concatenate([(1e-3 * rng.standard_normal(shift)).astype(np.float32), x])
    node = _node()
    moved = [(e.group, e.sample) for e in run_node(node, y, 16000, 480).events["events"]
             if isinstance(e, SoundEventStarted)]
    node.close()
    assert moved == [(group, start + shift)]


@needs_model
def test_threshold_between_quantised_steps_is_warned_at_load(caplog):
    """A threshold set strictly between two of the quantised model's score steps acts as the
    step above it: prepare says so once per threshold, as a warning (not an error). Defaults,
    thresholds on a step, and an off threshold compared with the 'hold' moving mean are not
    warned about."""
    import logging

    from engine.node import AudioSpec

    def warnings_at_load(**params) -> list[str]:
        caplog.clear()
        node = _node("monitor", **params)
        with caplog.at_level(logging.WARNING, logger="engine"):
            node.prepare({"audio": AudioSpec(16000, 1, 480)})
        node.close()
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    assert warnings_at_load(on_threshold=0.55, off_threshold=0.25,
                            thresholds={"dog": [0.32, 0.18], "cat": [0.5, 0.3]}) == [
        "monitor: on_threshold = 0.55 lies between the quantised model's score steps 0.5 and "
        "0.6806 (a score is never between them): it acts as 0.6806",
        "monitor: thresholds.dog on = 0.32 lies between the quantised model's score steps "
        "0.3194 and 0.5 (a score is never between them): it acts as 0.5"]
    assert warnings_at_load(smoothing="max", off_threshold=0.18) == [  # met by one score
        "monitor: off_threshold = 0.18 lies between the quantised model's score steps 0.0937 "
        "and 0.1805 (a score is never between them): it acts as 0.1805"]
    assert warnings_at_load() == []  # the defaults: nothing said


@needs_model
def test_unknown_class_name_gets_did_you_mean():
    from engine.node import AudioSpec
    from engine.nodes.sound_events import SoundEvents

    params = SoundEvents.Params(groups={"alarm": ["Sirne", "Buzzer"], "dog": ["Bark"]})
    problems = SoundEvents.validate_params(params)
    assert problems == ["groups.alarm: unknown AudioSet class 'Sirne' (did you mean 'Siren'?)"]
    node = SoundEvents("monitor", params)
    with pytest.raises(NegotiationError) as e:
        node.negotiate({"audio": AudioSpec(16000, 1, 480)})
    assert str(e.value) == ("nodes[monitor].params.groups.alarm: unknown AudioSet class 'Sirne' "
                            "(did you mean 'Siren'?)")
    with pytest.raises(NegotiationError, match="needs 16000 Hz"):
        SoundEvents("m", SoundEvents.Params()).negotiate({"audio": AudioSpec(48000, 1, 480)})
    # the natural names of a display name with aliases point to it, not to a near spelling
    params = SoundEvents.Params(extra_groups={"home": ["Smoke alarm", "Baby cry"]})
    assert SoundEvents.validate_params(params) == [
        "extra_groups.home: unknown AudioSet class 'Smoke alarm' (did you mean "
        "'Smoke detector, smoke alarm'?)",
        "extra_groups.home: unknown AudioSet class 'Baby cry' (did you mean "
        "'Baby cry, infant cry'?)"]
    bad = SoundEvents.Params(thresholds={"dgo": [0.5, 0.2]}, off_threshold=0.9,
                             webhook_url="ftp://x")
    msgs = SoundEvents.validate_params(bad)
    assert any(m.startswith("thresholds.dgo: no such group (did you mean 'dog'?)") for m in msgs)
    assert any(m.startswith("off_threshold:") for m in msgs)
    assert any(m.startswith("webhook_url:") for m in msgs)


@needs_model
@needs_clips
def test_extra_groups_add_to_the_defaults_and_the_cli_says_what_it_listens_for(tmp_path):
    """`groups` replaces the defaults (a monitor that sets only a kettle group no longer hears
    alarms), `extra_groups` adds to them; the command line lists the groups at start."""
    import subprocess
    import sys

    from engine.nodes.sound_events import DEFAULT_GROUPS

    x = _clip(SMOKE_ALARM)
    kettle = {"kettle": ["Whistle", "Boiling"]}
    only = run_node(_node(groups=kettle), x, 16000, 480).events["events"]
    added = run_node(_node(extra_groups=kettle), x, 16000, 480).events["events"]
    assert not any(isinstance(e, SoundEventStarted) for e in only)
    assert [e.group for e in added if isinstance(e, SoundEventStarted)] == ["alarm"]
    r = subprocess.run([sys.executable, "-m", "engine.cli", "run",
                        str(REPO / "graphs" / "sound_monitor.toml"), "--input", str(SMOKE_ALARM),
                        "--fast", "--set",
                        'monitor.extra_groups={kettle=["Whistle", "Boiling"]}'],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"monitor: listening for {', '.join([*DEFAULT_GROUPS, 'kettle'])}" in r.stderr


@needs_model
def test_graph_file_reports_unknown_class_with_path():
    from engine.graph import parse_graph

    text = (REPO / "graphs" / "sound_monitor.toml").read_text()
    text = text.replace('params = { patch_hop_s = 0.24,',
                        'params = { groups = { alarm = ["Sirne"] }, patch_hop_s = 0.24,')
    with pytest.raises(GraphError) as e:
        parse_graph(text, "sound_monitor.toml")
    assert ("nodes[monitor].params.groups.alarm: unknown AudioSet class 'Sirne' "
            "(did you mean 'Siren'?)") in e.value.problems


@needs_model
@needs_clips
def test_sound_monitor_graph_runs_on_a_file():
    from engine.graph import load_graph
    from engine.runtime import Engine

    spec = load_graph(REPO / "graphs" / "sound_monitor.toml")
    eng = Engine(spec, input=str(SMOKE_ALARM), realtime=False)
    got = []
    eng.on("sound.*", got.append)
    eng.start()
    try:
        assert eng.wait(60.0), "graph did not finish"
    finally:
        eng.stop()
    assert [(e.type, e.group) for e in got] == [("sound.started", "alarm"),
                                                ("sound.stopped", "alarm")]


def _drain_io(node) -> list:
    """One empty process call: delivers errors reported by the node's background threads."""
    io = NodeIO(node.id, {}, ["events", "scores"])
    io._in = {"audio": np.zeros((0, 1), np.float32)}
    io.start = {"audio": node._pos}
    node.process(io)
    return list(io._events_out["events"])


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        n = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


@needs_model
@needs_clips
def test_webhook_posts_events_and_survives_server_down():
    _Hook.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    x = _clip(SMOKE_ALARM)
    node = _node(webhook_url=url, webhook_retries=1, webhook_timeout_s=1.0)
    r = run_node(node, x, 16000, 480)
    assert node.wait_idle(10.0)
    assert [b["type"] for b in _Hook.bodies] == ["sound.started", "sound.stopped"]
    assert _Hook.bodies[0]["group"] == "alarm"
    assert _Hook.bodies[0]["sample"] == r.events["events"][0].sample
    assert _Hook.bodies[0]["utc"].endswith("+00:00") and _Hook.bodies[0]["host"]
    assert node.stats()["webhook_posted"] == 2
    node.close()

    server.shutdown()
    server.server_close()
    node = _node(webhook_url=url, webhook_retries=1, webhook_timeout_s=1.0)
    r = run_node(node, x, 16000, 480)  # must not raise; the end of stream waits for the posts
    sound = [type(e) for e in r.events["events"] if not isinstance(e, NodeError)]
    assert sound == [SoundEventStarted, SoundEventStopped]
    assert node.wait_idle(10.0)
    assert node.stats()["webhook_failed"] == 2
    errors = [e for e in r.events["events"] + _drain_io(node) if isinstance(e, NodeError)]
    assert errors and "webhook POST" in errors[0].message
    node.close()


@needs_model
@needs_clips
@pytest.mark.parametrize("reply", [b"garbage\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"])
def test_webhook_garbled_reply_counts_as_failed(reply):
    """An endpoint that answers with a broken status line or a cut-off body: each post is
    retried and counted failed (these were in no counter at all)."""
    import socket as sk

    srv = sk.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(65536)
            c.sendall(reply)
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    node = _node(webhook_url=f"http://127.0.0.1:{srv.getsockname()[1]}/hook",
                 webhook_retries=1, webhook_timeout_s=1.0)
    run_node(node, _clip(SMOKE_ALARM), 16000, 480)
    assert node.wait_idle(10.0)
    node.close()
    srv.close()
    st = node.stats()
    assert st["webhook_failed"] == 2 and st["webhook_posted"] == 0, st


class _SlowHook(_Hook):
    """Answers only once ``release`` is set (an endpoint that fell behind)."""

    release = threading.Event()

    def do_POST(self):  # noqa: N802 - http.server API
        type(self).release.wait(30)
        super().do_POST()


@needs_model
@needs_clips
@pytest.mark.parametrize("answers", [True, False], ids=["late", "never"])
def test_webhook_behind_drops_oldest_and_counts_every_post_once(monkeypatch, answers):
    """Three alarms (6 posts) into an endpoint that does not answer, with room for 2 queued
    posts: the post in flight stays, the oldest queued ones are dropped and reported, the
    newest are kept. Every post ends in exactly one counter (the soak trial found 440 posts
    counted as 524, and 164 dropped with no trace)."""
    from engine.nodes import sound_events as se

    monkeypatch.setattr(se, "WEBHOOK_QUEUE", 2)
    _SlowHook.bodies, _SlowHook.release = [], threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alarm = _clip(SMOKE_ALARM)
    gap = np.zeros(16000 * 3, np.float32)
    x = np.concatenate([alarm, gap, alarm, gap, alarm, gap])
    node = _node(webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook",
                 webhook_retries=0, webhook_timeout_s=1.5 if not answers else 20.0)
    if answers:  # the endpoint catches up once the stream has been processed
        threading.Timer(1.0, _SlowHook.release.set).start()
    r = run_node(node, x, 16000, 480)
    sent = [e for e in r.events["events"] if not isinstance(e, NodeError)]
    assert len(sent) == 6
    errors = [e.message for e in r.events["events"] if isinstance(e, NodeError)]
    assert sum("the oldest dropped (1 so far)" in m for m in errors) == 1, errors
    node.close()
    st = node.stats()
    assert st["webhook_dropped"] == 3
    assert st["webhook_posted"] + st["webhook_failed"] + st["webhook_dropped"] + \
        st["webhook_undelivered_at_end"] == 6, st
    if answers:  # the first (in flight) and the two newest arrived, in order
        assert st["webhook_posted"] == 3
        assert [b["sample"] for b in _SlowHook.bodies] == \
            [sent[0].sample, sent[4].sample, sent[5].sample]
    _SlowHook.release.set()
    server.shutdown()
    server.server_close()


@needs_model
@needs_clips
def test_evidence_folder_keeps_the_newest_clips_under_evidence_max_mb(tmp_path):
    """A monitor left running must not fill the disk: past evidence_max_mb the oldest clips of
    this node are deleted (WAV and JSON), counted and reported; other files are untouched,
    and clips of an earlier run count."""
    alarm = _clip(SMOKE_ALARM)
    x = np.concatenate([alarm, np.zeros(16000 * 3, np.float32)] * 3)
    node = _node(evidence_dir=str(tmp_path / "all"), pre_roll_s=2.0, evidence_max_mb=0)
    run_node(node, x, 16000, 480)  # no limit: the three clips' sizes
    assert node.wait_idle(10.0)
    node.close()
    sizes = [w.stat().st_size + w.with_suffix(".json").stat().st_size
             for w in sorted((tmp_path / "all").glob("*.wav"))]
    assert len(sizes) == 3
    cap = (sizes[1] + sizes[2] + sizes[0] // 2) / 1e6  # room for the newest two
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "notes.txt").write_text("mine")
    node = _node(evidence_dir=str(ev), pre_roll_s=2.0, evidence_max_mb=cap)
    r = run_node(node, x, 16000, 480)
    assert node.wait_idle(10.0)
    node.close()
    started = [e for e in r.events["events"] if isinstance(e, SoundEventStarted)]
    assert len(started) == 3
    st = node.stats()
    wavs = sorted(ev.glob("*.wav"))
    assert st["clips_written"] == 3 and st["clips_pruned"] == 1 and len(wavs) == 2, st
    kept = sorted(json.loads(w.with_suffix(".json").read_text())["started"]["sample"]
                  for w in wavs)
    assert kept == [e.sample for e in started][-len(wavs):]  # the newest
    assert len(list(ev.glob("*.json"))) == len(wavs) and (ev / "notes.txt").exists()
    msgs = [e.message for e in r.events["events"] + _drain_io(node) if isinstance(e, NodeError)]
    assert any("the oldest deleted" in m for m in msgs), msgs
    # a second run counts the first run's clips: the folder stays under the cap
    node = _node(evidence_dir=str(ev), pre_roll_s=2.0, evidence_max_mb=cap)
    run_node(node, x, 16000, 480)
    assert node.wait_idle(10.0)
    node.close()
    assert sum(f.stat().st_size for f in ev.glob("*_mon_*")) <= cap * 1e6
    assert node.stats()["clips_pruned"] == 3 and len(list(ev.glob("*.wav"))) == 2


@needs_model
@needs_clips
def test_evidence_clip_written_with_pre_roll(tmp_path):
    x = _clip(BABY_CRY)
    node = _node(evidence_dir=str(tmp_path / "ev"), pre_roll_s=0.5)
    r = run_node(node, x, 16000, 1000)
    assert node.wait_idle(10.0)
    node.close()
    started = [e for e in r.events["events"] if isinstance(e, SoundEventStarted)]
    wavs = sorted((tmp_path / "ev").glob("*.wav"))
    assert len(wavs) == len(started) >= 1
    meta = json.loads(wavs[0].with_suffix(".json").read_text())
    assert meta["group"] == started[0].group
    assert meta["clip_start_sample"] == max(0, started[0].sample - 8000)
    y, sr = sf.read(str(wavs[0]), dtype="float32")
    a = meta["clip_start_sample"]
    assert sr == 16000 and len(y) > 8000
    assert np.max(np.abs(y - x[a:a + len(y)])) < 1e-3  # 16-bit PCM of the input audio


def test_evidence_dir_that_cannot_be_written_is_a_graph_error(tmp_path):
    """Refused when the graph is loaded, with its path, like an unwritable sink.events file,
    not found at the run's first event; checking a good folder leaves nothing behind."""
    from engine.graph import parse_graph

    text = (REPO / "graphs" / "sound_monitor.toml").read_text()
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a folder should be")
    bad = [(blocker / "clips", f"{blocker} is a file, not a folder"),
           (blocker, "a file, not a folder")]
    if Path("/proc/self").is_dir():
        bad.append((Path("/proc/evid"), "No such file or directory"))  # even for root
    for folder, why in bad:
        with pytest.raises(GraphError) as e:
            parse_graph(text, "sound_monitor.toml", {"monitor": {"evidence_dir": str(folder)}})
        assert e.value.problems == [
            f"nodes[monitor].params.evidence_dir: cannot save clips in {folder} ({why}) "
            "(from params['monitor']['evidence_dir'])"], e.value.problems
    good = tmp_path / "a" / "b"
    parse_graph(text, "sound_monitor.toml", {"monitor": {"evidence_dir": str(good)}})
    assert not (tmp_path / "a").exists()


@needs_model
@needs_clips
def test_disk_full_during_the_run_is_reported_not_fatal(tmp_path, monkeypatch):
    """A folder that passed the load-time check can still fail while running (the disk
    fills): each clip that is not saved is an engine.node_error, the events go on."""
    import errno

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    node = _node(evidence_dir=str(tmp_path / "clips"))
    monkeypatch.setattr(sf, "write", full)
    r = run_node(node, _clip(SMOKE_ALARM), 16000, 480)
    events = r.events["events"]
    assert [type(e) for e in events if not isinstance(e, NodeError)] == \
        [SoundEventStarted, SoundEventStopped]
    assert node.wait_idle(10.0)
    assert node.stats()["clips_failed"] == 1
    # the end of the stream waits for the writer, so its failure is reported by then
    errors = [e.message for e in events + _drain_io(node) if isinstance(e, NodeError)]
    assert any("not saved" in m and "No space left on device" in m for m in errors), errors
    assert not list((tmp_path / "clips").iterdir())  # no truncated clip left behind
    node.close()


@needs_model
@pytest.mark.parametrize("clip", ["sherpa-audiotagging__7.wav", "sherpa-audiotagging__8.wav"],
                         ids=["smoke-alarm", "siren"])
def test_alarm_through_the_null_sink_microphone(pulse, clip):
    """The real path: an alarm clip played into the PulseAudio null sink is captured by
    source.microphone in graphs/sound_monitor.toml and raises an 'alarm' event."""
    from engine.graph import load_graph
    from engine.runtime import Engine

    path = EVENTS_DIR / clip
    if not path.exists():
        pytest.skip(f"clip not found: {path}")
    eng = Engine(load_graph(REPO / "graphs" / "sound_monitor.toml"))
    started: list = []
    eng.on("sound.started", started.append)
    eng.start()
    try:
        time.sleep(0.5)
        x, sr = load_mono(path)
        Player(x, sr).start().join()
        time.sleep(1.5)
    finally:
        eng.stop()
    assert [e.group for e in started].count("alarm") >= 1, [(e.group, e.score) for e in started]
    assert eng.stats()["nodes"]["mic"]["input_overflows"] == 0


@needs_model
@needs_clips
def test_confirmed_event_reports_the_classes_that_opened_it():
    """With min_duration_s an event is confirmed patches after it opened; its top classes are
    those of the opening patch (they used to come from the confirming one: 'Dog (0.05)' on an
    event whose score was 0.50)."""
    x, _ = load_mono(EVENTS_DIR / "ibm-max__dog.wav", 16000)  # a dog whining and barking
    events = run_node(_node(min_duration_s=0.3, cooldown_s=0.0), x, 16000, 480).events["events"]
    started = [e for e in events if isinstance(e, SoundEventStarted)]
    assert started
    for e in started:
        assert e.top_classes[0][1] == pytest.approx(e.score, abs=0.01), e


@needs_model
@needs_clips
def test_min_duration_drops_short_sounds():
    """min_duration_s counts patches where the sound itself scores: single barks (one patch
    each, held open by 'hold' smoothing for two more) are dropped at 0.5 s, kept at 0."""
    x = _clip(EVENTS_DIR / "sherpa-audiotagging__12.wav")  # separate barks

    def starts(m: float) -> int:
        ev = run_node(_node(min_duration_s=m, cooldown_s=0.0), x, 16000, 480).events["events"]
        return sum(isinstance(e, SoundEventStarted) for e in ev)

    assert starts(0.0) >= 3 and starts(0.5) == 0

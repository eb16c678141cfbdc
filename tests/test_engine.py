"""The real kokoro code path, on a small random-weight checkpoint."""

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from narrator.audiofiles import write_wav
from narrator.engine import SynthesisError, torch_engine
from narrator.engine.g2p import MAX_PHONEMES, chunk_sentences, chunk_text, phonemize
from narrator.engine.torch_engine import KokoroSynthesizer, Lazy
from narrator.errors import BadInput, ModelUnavailable
from narrator.weights.packs import blend_packs, read_pack
from narrator.weights.sources import locate_model


def clone(model: Path, folder: Path) -> Path:
    """A model folder of symlinks to the tiny checkpoint (as the HF cache lays it out)."""
    (folder / "voices").mkdir(parents=True)
    for path in model.rglob("*"):
        if path.is_file():
            (folder / path.relative_to(model)).symlink_to(path)
    return folder


def render(tiny_model: Path, text: str, out: Path, voice: str = "af_heart") -> float:
    speech = KokoroSynthesizer(model_dir=tiny_model).render(text, voice, 1.0, "a")
    return write_wav(out, speech.samples)


def test_short_text_is_a_24khz_wav(tiny_model: Path, tmp_path: Path) -> None:
    seconds = render(tiny_model, "Hello there.", tmp_path / "a.wav")
    data, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 24_000 and data.ndim == 1
    assert seconds == pytest.approx(len(data) / rate) and seconds > 0
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_same_input_same_samples(tiny_model: Path, tmp_path: Path) -> None:
    render(tiny_model, "Same words twice.", tmp_path / "1.wav")
    render(tiny_model, "Other words first.", tmp_path / "x.wav")
    render(tiny_model, "Same words twice.", tmp_path / "2.wav")
    assert (tmp_path / "1.wav").read_bytes() == (tmp_path / "2.wav").read_bytes()


def test_long_text_is_spoken_completely(tiny_model: Path, tmp_path: Path) -> None:
    sentence = "The quick brown fox jumps over the lazy dog, again and again. "
    long_text = sentence * 12
    assert len(phonemize(long_text, "a")) > MAX_PHONEMES
    short = render(tiny_model, sentence, tmp_path / "s.wav")
    long = render(tiny_model, long_text, tmp_path / "l.wav")
    # every phoneme lasts one frame in the tiny model: audio length counts phonemes
    assert long == pytest.approx(12 * short, rel=0.1)


def test_chunks_respect_the_window_and_words() -> None:
    phonemes = phonemize("Dr. Smith said: " + "words, " * 200 + "the end.", "a")
    chunks = [chunk_text(c) for c in chunk_sentences([phonemes])]
    assert len(chunks) > 1 and all(len(c) <= MAX_PHONEMES for c in chunks)
    assert " ".join(chunks) == phonemes


def test_nothing_speakable_is_a_synthesis_error(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(SynthesisError, match="nothing speakable"):
        render(tiny_model, "... !!", tmp_path / "e.wav")
    assert not list(tmp_path.iterdir())


def test_blend_differs_from_its_parts(tiny_model: Path, tmp_path: Path) -> None:
    render(tiny_model, "Blend me.", tmp_path / "a.wav", "af_heart")
    render(tiny_model, "Blend me.", tmp_path / "b.wav", "af_heart:1,af_sky:1")
    a, _ = soundfile.read(tmp_path / "a.wav")
    b, _ = soundfile.read(tmp_path / "b.wav")
    assert len(a) == len(b) and not np.array_equal(a, b)


def test_failed_write_keeps_the_old_file(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keep.wav"
    target.write_bytes(b"previous audio")
    import narrator.audiofiles as audio

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio.os, "replace", crash)
    with pytest.raises(OSError):
        render(tiny_model, "Interrupted.", target)
    assert target.read_bytes() == b"previous audio"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_model_loads_once_under_concurrent_first_use(tiny_model: Path, tmp_path: Path) -> None:
    copy = clone(tiny_model, tmp_path / "model")
    before = len(torch_engine.LOADS)
    barrier = threading.Barrier(4)
    models = []

    def first_use() -> None:
        barrier.wait()
        models.append(torch_engine.shared_model(copy, "cpu"))

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(torch_engine.LOADS) - before == 1
    assert all(m is models[0] for m in models)


def test_lazy_builds_once() -> None:
    calls = []
    lazy = Lazy(lambda: calls.append(1) or "value")
    assert [lazy.get() for _ in range(3)] == ["value"] * 3 and calls == [1]


@pytest.mark.parametrize("missing", ["config.json", "kokoro-v1_0.pth", "voices"])
def test_availability_names_what_is_missing(tiny_model: Path, tmp_path: Path, missing: str) -> None:
    folder = clone(tiny_model, tmp_path / "m")
    target = folder / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelUnavailable, match=missing.split(".")[0]):
        KokoroSynthesizer(model_dir=folder).check("af_heart", "a")


def test_missing_voice_names_present_ones(tiny_model: Path) -> None:
    with pytest.raises(BadInput, match="af_heart, af_sky"):
        KokoroSynthesizer(model_dir=tiny_model).check("bf_emma", "b")


def test_offline_without_model_explains(tmp_path: Path) -> None:
    location = locate_model()
    assert location.found is None
    message = location.explain()
    assert "narrator model pull" in message and "offline" in message


def test_hf_cache_layout_is_found_offline(tiny_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "hf" / "hub" / "models--hexgrad--Kokoro-82M"
    snapshot = repo / "snapshots" / "0123abcd"
    clone(tiny_model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    found = locate_model().found
    assert found is not None and found.name == "hf-cache" and found.folder == snapshot
    render_folder = KokoroSynthesizer().folder()
    assert render_folder == snapshot


def test_narrator_own_folder_wins_over_cache(tiny_model: Path, tmp_path: Path) -> None:
    from narrator.weights.sources import narrator_model_dir

    clone(tiny_model, narrator_model_dir())
    found = locate_model().found
    assert found is not None and found.name == "narrator"


def test_same_audio_from_a_copy_of_the_model(tiny_model: Path, tmp_path: Path) -> None:
    render(tiny_model, "Where the model lives does not matter.", tmp_path / "1.wav")
    render(
        clone(tiny_model, tmp_path / "m2"),
        "Where the model lives does not matter.",
        tmp_path / "2.wav",
    )
    assert (tmp_path / "1.wav").read_bytes() == (tmp_path / "2.wav").read_bytes()


def test_malloc_threshold_is_pinned_before_the_model_loads() -> None:
    """glibc's dynamic mmap threshold made RSS grow to GiBs (bench/memory.py)."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    assert torch_engine.limit_heap_growth() is True


@pytest.mark.parametrize("chunk_limit", [250, 12])
def test_render_says_where_each_sentence_lies(tiny_model: Path, chunk_limit: int) -> None:
    """Cues follow the sentences, tile the audio without gaps or overlaps, and hold when
    a sentence is cut across chunks."""
    synth = KokoroSynthesizer(model_dir=tiny_model, chunk_limit=chunk_limit)
    text = 'First one here. "Second, a rather longer sentence," she said. Third?'
    speech = synth.render(text, "af_heart", 1.0, "a")
    assert [c[2] for c in speech.cues] == [
        "First one here.",
        '"Second, a rather longer sentence," she said.',
        "Third?",
    ]
    assert speech.cues[0][0] == 0
    for (start, length, _), (after, _, _) in zip(speech.cues, speech.cues[1:], strict=False):
        assert length > 0 and start + length == after
    last_start, last_length, _ = speech.cues[-1]
    assert last_start + last_length == speech.samples.size


def test_voice_packs_read_without_torch_are_torchs_tensors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """read_pack gives torch.load's values without calling it, for a view and a strided
    tensor too; a blend is the weighted mean torch computed, bit for bit; a file in torch's
    legacy format goes to torch."""
    import torch

    rng = torch.Generator().manual_seed(3)
    packs = [torch.rand(510, 1, 256, generator=rng) for _ in range(2)]
    saved = {
        "a.pt": packs[0],
        "view.pt": packs[1][5:10, :, 3:7],
        "strided.pt": packs[1].transpose(0, 2),
        "half.pt": packs[1].half(),
    }
    for name, tensor in saved.items():
        torch.save(tensor, tmp_path / name)
    torch.save(packs[1], tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with monkeypatch.context() as patched:
        patched.setattr(torch, "load", _refuse)
        for name, tensor in saved.items():
            assert np.array_equal(read_pack(tmp_path / name), tensor.float().numpy()), name
    assert np.array_equal(read_pack(tmp_path / "legacy.pt"), packs[1].numpy())
    weights = torch.tensor([1.0, 2.0])
    torchs = (torch.stack(packs) * (weights / weights.sum()).view(-1, 1, 1, 1)).sum(dim=0)
    assert blend_packs([p.numpy() for p in packs], [1.0, 2.0]).tobytes() == (
        torchs.numpy().tobytes()
    )


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("torch.load")


def test_a_pack_that_is_not_a_plain_tensor_goes_to_torch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A view reaching past its storage, or a pickle that holds no tensor, is never read
    as one: torch.load gets the file (and says what is wrong with it)."""
    import collections
    import io
    import pickle
    import zipfile

    import torch

    torch.save(torch.zeros(4), tmp_path / "good.pt")

    class Storage:
        pass

    class Outside:  # 6 floats from offset 2 of a storage of 4
        def __reduce__(self) -> tuple:
            return (
                torch._utils._rebuild_tensor_v2,
                (Storage(), 2, (6,), (1,), False, collections.OrderedDict()),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    for name, payload in (("outside.pt", Outside()), ("dict.pt", {"pack": 1})):
        with (
            zipfile.ZipFile(tmp_path / "good.pt") as good,
            zipfile.ZipFile(tmp_path / name, "w") as bad,
        ):
            for item in good.infolist():
                data = good.read(item)
                if item.filename.endswith("/data.pkl"):
                    buffer = io.BytesIO()
                    Pickler(buffer, protocol=2).dump(payload)
                    data = buffer.getvalue()
                bad.writestr(item, data)
    monkeypatch.setattr(torch, "load", _refuse)
    for name in ("outside.pt", "dict.pt"):
        with pytest.raises(AssertionError, match="torch.load"):
            read_pack(tmp_path / name)

import hashlib

from narrator.planning import (
    AudioState,
    Casting,
    Recording,
    Rules,
    SegmentState,
    Voicing,
    Why,
    audio_state,
    plan_generation,
)

VOICING = Voicing("af_heart", 1.0, "a")


def seg(
    i: int,
    text: str = "text",
    locked: bool = False,
    audio: bool = False,
    on_disk: bool = True,
    made_from: str | None = None,
    damaged: bool = False,
) -> SegmentState:
    stamp = VOICING.fingerprint(made_from or text) if audio else None
    recording = (
        Recording.none
        if not audio
        else Recording.missing
        if not on_disk
        else Recording.damaged
        if damaged
        else Recording.whole
    )
    return SegmentState(i, i, text, locked, f"a/{i}.wav" if audio else None, recording, stamp)


def plan(segments: list[SegmentState], **options: bool):  # noqa: ANN201
    return plan_generation(segments, casting=Casting(VOICING), rules=Rules(**options))


def test_skip_reasons_are_counted_in_order() -> None:
    segments = [seg(1), seg(2, locked=True), seg(3, audio=True), seg(4, "  \n "), seg(5, "")]
    result = plan(segments)
    assert result.to_process == [1]
    assert result.skipped == {"locked": 1, "has_audio": 1, "empty": 2}
    assert result.total == 5


def test_no_skip_locked_and_force() -> None:
    segments = [seg(1, locked=True), seg(2, audio=True), seg(3, "")]
    assert plan(segments, skip_locked=False).to_process == [1]
    forced = plan(segments, skip_locked=False, force=True)
    assert forced.to_process == [1, 2]
    assert [d.why for d in forced.decisions] == [Why.no_audio, Why.forced, Why.empty]


def test_missing_audio_file_needs_audio() -> None:
    result = plan([seg(1, audio=True, on_disk=False)])
    assert result.to_process == [1] and result.decisions[0].why is Why.audio_missing


def test_damaged_audio_needs_audio_without_force() -> None:
    result = plan([seg(1, audio=True, damaged=True)])
    assert result.to_process == [1] and result.decisions[0].why is Why.audio_damaged


def test_changed_renders_only_stale_audio() -> None:
    segments = [seg(1, "new text", audio=True, made_from="old text"), seg(2, audio=True)]
    plain = plan(segments)
    assert plain.to_process == [] and plain.stale_kept == 1
    changed = plan(segments, changed=True)
    assert changed.to_process == [1] and changed.decisions[0].why is Why.stale


def fingerprint(text: str, voice: str, speed: float, lang: str) -> str:
    return Voicing(voice, speed, lang).fingerprint(text)


def test_fingerprint_follows_voice_speed_and_lang() -> None:
    base = fingerprint("x", "af_heart", 1.0, "a")
    assert base == fingerprint(" x ", "af_heart", 1.0, "a")
    assert (
        len(
            {
                base,
                fingerprint("x", "af_sky", 1.0, "a"),
                fingerprint("x", "af_heart", 1.1, "a"),
                fingerprint("x", "af_heart", 1.0, "b"),
            }
        )
        == 4
    )
    # what every project's audio_fingerprint was computed as: stale audio stays noticed
    assert base == hashlib.sha256(b'["x", "af_heart", 1.0, "a"]').hexdigest()


def test_audio_state_is_the_file_first_then_what_it_was_made_from() -> None:
    now = VOICING.fingerprint("x")
    assert audio_state(Recording.none, None, VOICING, "x") is AudioState.none
    assert audio_state(Recording.missing, now, VOICING, "x") is AudioState.missing
    assert audio_state(Recording.damaged, now, VOICING, "x") is AudioState.damaged
    assert audio_state(Recording.whole, now, VOICING, "x") is AudioState.current
    assert audio_state(Recording.whole, "other", VOICING, "x") is AudioState.stale
    assert audio_state(Recording.whole, now, VOICING, "y") is AudioState.stale


def test_sequence_order() -> None:
    assert plan([seg(3), seg(1), seg(2)]).to_process == [1, 2, 3]

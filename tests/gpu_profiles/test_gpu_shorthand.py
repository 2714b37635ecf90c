"""GPU shorthand such as ``H100:80GB:8`` parses, resolves to a profile, and fails only with ProfileError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_profiles import GpuProfile, GpuSpec, ProfileError, load_profiles, parse_gpu_shorthand

PROFILES = load_profiles()


@pytest.mark.parametrize(
    ("text", "model", "memory", "count", "profile"),
    [
        ("H100:80GB:8", "H100", 80, 8, "H100-80GB"),
        ("T4:16GB:1", "T4", 16, 1, "T4"),
        ("A100:40GB:8", "A100", 40, 8, "A100-40GB"),
        ("a100:80gb:4", "A100", 80, 4, "A100-80GB"),
        ("H200:141GB", "H200", 141, 1, "H200-141GB"),
        ("L4", "L4", None, 1, "L4"),
        ("l40s:2", "L40S", None, 2, "L40S"),
        ("A10G:24GB:4", "A10G", 24, 4, "A10G"),
        ("H100-80GB:8", "H100", 80, 8, "H100-80GB"),
        (" h100 : 80GiB : 8 ", "H100", 80, 8, "H100-80GB"),
        ("h200", "H200", None, 1, "H200-141GB"),
    ],
)
def test_good_shorthand(text, model, memory, count, profile):
    spec = parse_gpu_shorthand(text)
    assert (spec.model, spec.memory_gib, spec.count) == (model, memory, count)
    resolved = spec.resolve(PROFILES)
    assert isinstance(resolved, GpuProfile)
    assert resolved.name == profile


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "invalid GPU shorthand ''"),
        (":", "invalid GPU shorthand"),
        ("H100:80GB:8:1", "invalid GPU shorthand"),
        ("H100:8:80GB", "invalid part '80GB'"),
        ("H100:80GB:80GB", "invalid part '80GB'"),
        ("8:H100", "invalid GPU model '8'"),
        ("H-100", "invalid GPU model 'H-100'"),
        ("H100:80TB", "invalid part '80TB'"),
        ("H100:0", "GPU count 0"),
        ("H100:65", "allowed: 1..64"),
        ("H100:0GB", "GPU memory 0GB"),
        ("H100-80GB:40GB", "invalid part '40GB'"),
        ("H100:\u0668", "invalid part"),  # an Arabic-Indic digit is not a count
    ],
)
def test_bad_shorthand(text, words):
    with pytest.raises(ProfileError) as info:
        parse_gpu_shorthand(text)
    assert words in str(info.value)
    assert "e.g. 'H100:80GB:8'" in str(info.value) or "allowed" in str(info.value)


@pytest.mark.parametrize("value", [None, 8, b"H100:80GB:8", ["H100"]])
def test_non_string_shorthand(value):
    with pytest.raises(ProfileError, match="must be a string"):
        parse_gpu_shorthand(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("A100", "'A100' is ambiguous; add the memory: A100:40GB, A100:80GB"),
        ("A100:24GB", "has no 24GB profile; allowed: 40GB, 80GB"),
        ("L4:48GB", "has no 48GB profile; allowed: 24GB"),
        ("B200:192GB:8", "'B200' has no profile; allowed models: A100, A10G, H100, H200, L4, L40S, T4"),
    ],
)
def test_resolve_errors(text, words):
    spec = parse_gpu_shorthand(text)
    with pytest.raises(ProfileError) as info:
        spec.resolve(PROFILES)
    assert words in str(info.value)


def test_spec_is_immutable_and_prints_as_shorthand():
    spec = parse_gpu_shorthand("h100:80gb:8")
    assert str(spec) == "H100:80GB:8"
    assert parse_gpu_shorthand(str(spec)) == spec
    with pytest.raises(Exception):
        spec.count = 2  # type: ignore[misc]


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_garbage_only_ever_raises_profile_error(text):
    try:
        spec = parse_gpu_shorthand(text)
    except ProfileError:
        return
    assert isinstance(spec, GpuSpec)
    try:
        assert isinstance(spec.resolve(PROFILES), GpuProfile)
    except ProfileError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\A[A-Za-z0-9:\- ]{0,20}\Z"))
def test_near_miss_input_only_ever_raises_profile_error(text):
    try:
        parse_gpu_shorthand(text).resolve(PROFILES)
    except ProfileError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    count=st.integers(min_value=1, max_value=64),
    lower=st.booleans(),
)
def test_every_profile_round_trips_through_shorthand(profile, count, lower):
    target = PROFILES[profile]
    text = f"{target.model}:{target.memory_gib}GB:{count}"
    spec = parse_gpu_shorthand(text.lower() if lower else text)
    assert spec.resolve(PROFILES) == target
    assert spec.count == count

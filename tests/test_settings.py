"""GenerationSettings.parse: untrusted values in, clean settings or a clear InvalidRequest out."""

from dataclasses import fields

import pytest
import torch

import textgen.local.devices
from textgen.cli import build_parser, main
from textgen.core.settings import (
    CHAT_STYLE,
    CHAT_STYLE_NAME,
    CONTROLS,
    PRESETS,
    SLIDERS,
    GenerationSettings,
    InvalidRequest,
    Limits,
    matching_style,
    preset_values,
    style_values,
)
from textgen.core.settings import STYLES as PAGE_STYLES
from textgen.local.devices import configure_cpu_threads, pick_device

parse = GenerationSettings.parse


def test_invalid_request_is_a_value_error():
    assert issubclass(InvalidRequest, ValueError)


def test_defaults_when_nothing_is_given():
    s = parse("Hello")
    assert (s.prompt, s.temperature, s.top_k, s.top_p) == ("Hello", 0.8, 0, 1.0)
    assert (s.max_new_tokens, s.num_samples, s.alternatives) == (200, 1, 5)
    assert s.seed is None and s.stop == () and s.warnings == ()
    assert not s.greedy


@pytest.mark.parametrize("field", [*CONTROLS, "seed", "stop"])
def test_none_means_the_default(field):
    assert getattr(parse("x", **{field: None}), field) == getattr(GenerationSettings(prompt="x"), field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1),
        ("temperature", 99),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", "abc"),
        ("temperature", "nan"),
        ("temperature", True),
        ("temperature", [0.5]),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_k", 2.5),
        ("top_k", -1),
        ("top_k", "2.5"),
        ("min_p", 1.1),
        ("repetition_penalty", 0.5),
        ("no_repeat_ngram_size", 11),
        ("alternatives", 11),
        ("max_new_tokens", 0),
        ("max_new_tokens", Limits().max_new_tokens + 1),
        ("max_new_tokens", 10**30),
        ("num_samples", 0),
        ("num_samples", Limits().max_samples + 1),
        ("seed", 1.5),
        ("seed", 2**63),
        ("seed", float("nan")),
        ("seed", "abc"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(field, value):
    with pytest.raises(InvalidRequest, match=field):
        parse("x", **{field: value})


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], ["x" * 41], [1], b"abc", {"a": 1}, [None]])
def test_bad_stop_sequences_are_rejected(stop):
    with pytest.raises(InvalidRequest, match="stop"):
        parse("x", stop=stop)


def test_stop_sequences_accept_a_string_or_a_list_and_drop_empty_ones():
    assert parse("x", stop="\n\n").stop == ("\n\n",)
    assert parse("x", stop=["END", "", "###"]).stop == ("END", "###")
    assert parse("x", stop="").stop == ()
    assert parse("x", stop=["x" * 40] * 4).stop == ("x" * 40,) * 4


@pytest.mark.parametrize("prompt", [5, b"bytes", ["a", "list"], 1.5])
def test_prompt_must_be_text(prompt):
    with pytest.raises(InvalidRequest, match="prompt must be text"):
        parse(prompt)


def test_none_prompt_is_empty():
    assert parse(None).prompt == ""


def test_prompt_longer_than_the_limit_is_rejected():
    limit = Limits().max_prompt_chars
    assert parse("a" * limit).prompt == "a" * limit
    with pytest.raises(InvalidRequest, match="prompt has 10,001 characters"):
        parse("a" * (limit + 1))


def test_limits_can_be_tightened():
    limits = Limits(max_prompt_chars=5, max_new_tokens=10, max_samples=2)
    with pytest.raises(InvalidRequest, match="prompt"):
        parse("123456", limits)
    with pytest.raises(InvalidRequest, match="max_new_tokens must be between 1 and 10"):
        parse("x", limits, max_new_tokens=11)
    with pytest.raises(InvalidRequest, match="num_samples"):
        parse("x", limits, num_samples=3)


def test_unknown_keyword_is_rejected_by_name():
    with pytest.raises(InvalidRequest, match="unknown setting.*temprature"):
        parse("x", temprature=0.5)


def test_numeric_strings_are_accepted():
    s = parse("x", temperature="0.7", top_k=" 40 ", top_p="0.9", max_new_tokens="5", seed="12")
    assert (s.temperature, s.top_k, s.top_p, s.max_new_tokens, s.seed) == (0.7, 40, 0.9, 5, 12)
    assert isinstance(s.top_k, int) and isinstance(s.max_new_tokens, int)


def test_whole_floats_become_ints():
    s = parse("x", top_k=40.0, num_samples=2.0)
    assert s.top_k == 40 and isinstance(s.top_k, int) and s.num_samples == 2


@pytest.mark.parametrize("seed", [-1, -5, -0.5, ""])
def test_negative_or_empty_seed_means_random(seed):
    assert parse("x", seed=seed).seed is None


def test_seed_zero_and_large_seeds_are_kept():
    assert parse("x", seed=0).seed == 0
    assert parse("x", seed=2**63 - 1).seed == 2**63 - 1


def test_negative_seed_as_a_string_means_random():
    assert parse("x", seed="-1").seed is None


def test_temperature_zero_is_greedy():
    assert parse("x", temperature=0).greedy
    assert parse("x", temperature="0").greedy


def test_control_characters_and_lone_surrogates_are_removed_with_a_warning():
    s = parse("a\x00b\x07c\x1bd\x7fe\ud800f\udfffg")
    assert s.prompt == "abcdefg"
    assert len(s.warnings) == 1 and "6 control or invalid character(s)" in s.warnings[0]


def test_tabs_newlines_and_emoji_are_kept_without_warning():
    s = parse("a\tb\nc 😀 你好")
    assert s.prompt == "a\tb\nc 😀 你好"
    assert s.warnings == ()


def test_windows_and_old_mac_newlines_become_newlines():
    s = parse("one\r\ntwo\rthree\n")
    assert s.prompt == "one\ntwo\nthree\n"
    assert s.warnings == ()


def test_settings_are_frozen():
    s = parse("x")
    with pytest.raises(AttributeError):
        s.temperature = 2.0


def test_limits_from_env_reads_variables(monkeypatch):
    monkeypatch.setenv("TEXTGEN_MAX_NEW_TOKENS", "2000")
    monkeypatch.setenv("TEXTGEN_MAX_SAMPLES", "0")  # at least 1
    limits = Limits.from_env()
    assert limits.max_new_tokens == 2000
    assert limits.max_samples == 1
    assert limits.max_prompt_chars == Limits().max_prompt_chars
    assert parse("x", limits, max_new_tokens=2000).max_new_tokens == 2000


def test_limits_from_env_rejects_a_non_number(monkeypatch):
    monkeypatch.setenv("TEXTGEN_MAX_NEW_TOKENS", "lots")
    with pytest.raises(ValueError, match="TEXTGEN_MAX_NEW_TOKENS must be a whole number"):
        Limits.from_env()


def test_every_limit_is_read_from_its_own_variable(clean_env):
    for i, f in enumerate(fields(Limits)):
        clean_env.setenv(f"TEXTGEN_{f.name.upper()}", str(100 + i))
    limits = Limits.from_env()
    assert [getattr(limits, f.name) for f in fields(Limits)] == [100 + i for i in range(len(fields(Limits)))]


# -- the styles (presets) ----------------------------------------------------------------------------------

STYLES = {  # what each style sets; the sliders no style mentions (length, no-repeat size) keep their value
    "Precise": {"temperature": 0.3, "top_k": 20, "top_p": 0.9, "min_p": 0.0, "repetition_penalty": 1.1},
    "Balanced": {"temperature": 0.8, "top_k": 0, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05},
    "Creative": {"temperature": 1.1, "top_k": 0, "top_p": 1.0, "min_p": 0.05, "repetition_penalty": 1.0},
}


def test_each_style_sets_its_values():
    assert PRESETS == tuple(STYLES)
    for style, values in STYLES.items():
        assert preset_values(style) == values
        assert matching_style({**values, "no_repeat_ngram_size": 3, "max_new_tokens": 77}) == style
        assert parse("x", **values)  # every style is a valid request


def test_the_page_starts_at_the_balanced_style():
    start = {name: CONTROLS[name].start for name in SLIDERS}
    assert matching_style(start) == "Balanced"
    assert start["max_new_tokens"] == CONTROLS["max_new_tokens"].default == 200


@pytest.mark.parametrize("style", list(STYLES))
def test_moving_a_slider_off_a_style_gives_no_style(style):
    for name, value in STYLES[style].items():
        control = CONTROLS[name]
        moved = value + control.step if value + control.step <= control.high else value - control.step
        assert matching_style({**STYLES[style], name: moved}) is None, (style, name, moved)
    assert matching_style({}) is None and preset_values("No such style") == {} and style_values("No such") == {}


def test_chat_s_answers_style_is_one_of_the_page_s_styles():
    assert PAGE_STYLES == (*PRESETS, CHAT_STYLE_NAME)
    assert style_values(CHAT_STYLE_NAME) == CHAT_STYLE and preset_values(CHAT_STYLE_NAME) == {}
    assert matching_style(dict(CHAT_STYLE)) == CHAT_STYLE_NAME
    assert matching_style(dict(CHAT_STYLE), PRESETS) is None  # where a page offers only the presets


# -- CPU threads: --threads and TEXTGEN_THREADS ------------------------------------------------------------


@pytest.fixture
def threads_restored():
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn


@pytest.mark.parametrize(("asked", "env", "cores", "expected"), [
    (None, None, 4, 1),  # one thread unless told otherwise
    (None, "3", 4, 3),  # TEXTGEN_THREADS
    (2, "3", 4, 2),  # --threads wins over the variable
    (16, None, 4, 4),  # never more than the machine's cores
    (0, None, 4, 1),  # at least one
    (-5, None, 4, 1),
    (None, "64", 2, 2),
])
def test_threads_are_set_and_clamped(clean_env, threads_restored, asked, env, cores, expected):
    if env is not None:
        clean_env.setenv("TEXTGEN_THREADS", env)
    clean_env.setattr(textgen.local.devices.os, "cpu_count", lambda: cores)
    assert configure_cpu_threads(asked) == expected
    assert torch.get_num_threads() == expected
    assert not torch.backends.mkldnn.enabled


def test_the_cli_passes_threads_on(model_dirs, clean_env, capsys):
    asked = []
    clean_env.setattr(textgen.local.devices, "configure_cpu_threads", asked.append)
    assert main(["generate", "--model", str(model_dirs["gru"]), "--prompt", "F", "--max-new-tokens", "2",
                 "--seed", "1", "--threads", "3"]) == 0
    assert asked == [3]
    assert build_parser().parse_args(["train", "--arch", "gru", "--data", "x", "--out", "y",
                                      "--threads", "2"]).threads == 2


# -- the device: --device and TEXTGEN_DEVICE ----------------------------------------------------------------


def test_the_device_is_the_operators_choice(clean_env):
    assert pick_device("cpu") == torch.device("cpu")
    clean_env.setenv("TEXTGEN_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device 'cuda:1' was asked for, but CUDA is not available here"):
            pick_device("cuda:1")  # said at once, not a failure at the first request
        clean_env.setenv("TEXTGEN_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device()
        assert pick_device("cpu") == torch.device("cpu")  # --device wins over the variable

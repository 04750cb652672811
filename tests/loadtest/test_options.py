import math

import pytest
from locust import argument_parser

from loadtest import options


def parse(args, monkeypatch=None, env=None):
    parser = argument_parser.get_empty_argument_parser()
    options.register(parser)
    return parser.parse_args(args)


def test_defaults_make_an_open_ended_poisson_run():
    config = options.load_config(parse([]))
    assert config.schedule.arrival == "poisson" and config.nominal_rate == 10.0
    assert math.isinf(config.schedule.duration_s) and not config.finite
    assert config.values["arm_header"] == "x-canary-arm"
    assert config.shape.extra_body == {}


def test_environment_variables_set_options(monkeypatch):
    monkeypatch.setenv("LOCUST_RATE", "42.5")
    monkeypatch.setenv("LOCUST_ARRIVAL", "gamma")
    monkeypatch.setenv("LOCUST_STAGES", "warmup:2s@5,measure:8s@10")
    monkeypatch.setenv("LOCUST_REQUESTS_JSONL", "out/r.jsonl")
    config = options.load_config(parse([]))
    assert config.values["rate"] == 42.5 and config.schedule.arrival == "gamma"
    assert config.finite and config.schedule.duration_s == 10.0
    assert config.nominal_rate == pytest.approx((2 * 5 + 8 * 10) / 10)
    assert config.values["requests_jsonl"] == "out/r.jsonl"


def test_option_values_stay_plain_for_the_master_to_ship():
    values = options.option_values(
        parse(["--stages", "m:1s@1", "--slo", "ttft_ms.p99<=9", "--image-sizes", "8x8"])
    )
    # the text given, not parsed objects (the master ships these to its workers, who parse them again)
    assert (values["stages"], values["slo"], values["image_sizes"]) == ("m:1s@1", "ttft_ms.p99<=9", "8x8")
    assert values["rate"] == 10.0 and values["arm_header"] == "x-canary-arm"  # defaults are plain too
    assert all(isinstance(v, (str, int, float)) for v in values.values())


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arrival", "bursty"], "invalid choice: 'bursty'"),
        (["--rate", "0"], "'0' must be > 0"),
        (["--rate", "fast"], "'fast' is not a float"),
        (["--stages", "measure:60@1"], "bad duration '60'"),
        (["--slo", "p99<=3"], "bad SLO 'p99<=3'"),
        (["--image-sizes", "big"], "bad image size 'big'"),
        (["--unique-image-share", "1.5"], "must be within"),
        (["--extra-body", "[1]"], "must be a JSON object"),
        (["--max-in-flight", "0"], "'0' must be >= 1"),
    ],
)
def test_bad_values_are_one_argparse_error_naming_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert args[0] in err

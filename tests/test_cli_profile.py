import json

import pytest
from clitools import compress_cli, compress_process

from compress.cli import main


def test_profile_json_for_ghostnet_and_mobilenetv3():
    result = compress_cli("profile", "ghostnet", "mobilenetv3_large", "--json", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["model"] for r in records] == ["ghostnet", "mobilenetv3_large"]
    assert records[0]["params"] == 5_182_508 and records[0]["macs"] == 141_150_512
    assert records[0]["flops"] == 2 * records[0]["macs"]
    assert records[1]["params"] == 5_483_032
    assert all(r["input_size"] == 224 and r["latency_ms"] > 0 for r in records)
    assert records[0]["estimated"] == ["activation_bytes"] and "macs" in records[0]["measured"]


def test_profile_table_passes_options_to_the_models_that_take_them(capsys):
    code = main(["profile", "ghost_vgg16", "vgg16", "--s", "4", "--d", "1", "--repeats", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3.96 M (3,959,290)" in out and "14.99 M (14,987,722)" in out
    assert "80.05 M" in out and "313.46 M" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghostnt"], "did you mean ghostnet"),
        (["ghostnet", "--s", "1"], "--s must be >= 2, got 1"),
        (["ghostnet", "--d", "4"], "cheap kernel d must be a positive odd integer"),
        (["ghostnet", "--width", "0"], "--width must be > 0, got 0.0"),
        (["vgg16", "--input-size", "16"], "input size 16 is too small for vgg16"),
        (["vgg16", "--s", "3"], "no model among vgg16 takes option --s"),
        (["timm:ghostnet_10"], "did you mean timm:ghostnet_1"),
        (["ghostnet", "--input-size", "0"], "--input-size must be >= 1, got 0"),
        (["ghostnet", "--device", "cuda:0"], "no CUDA device"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    assert exit_code(["profile", *args, "--repeats", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def exit_code(argv: list[str]) -> int:
    """main()'s code, or argparse's when it exits on a bad argument."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


def test_bad_input_in_a_real_process_has_no_traceback():
    result = compress_process("profile", "ghostnet", "--s", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == "compress profile: error: --s must be >= 2, got 1"

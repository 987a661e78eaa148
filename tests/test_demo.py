"""`vist2 demo`: the three policies on one prompt, the compression table and a page read back."""

import re

from vist2.cli import main


def test_demo_prints_text_table_and_a_page_read_back(tmp_path, capsys):
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    text = "".join(f"Line {i} of a long story about the sea and a whale.\n" for i in range(2000))
    (tmp_path / "p.txt").write_text(text, encoding="utf-8")
    argv = ["demo", "--model", str(tmp_path / "m"), "--prompt-file", str(tmp_path / "p.txt")]
    argv += ["--prompt-tokens", "300", "--max-new-tokens", "300", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"global", "prompt", "none"} <= set(rows)
    cache_ratio = {p: float(rows[p].split("|")[8]) for p in ("global", "prompt", "none")}
    assert cache_ratio["none"] == 1.0
    assert cache_ratio["global"] < cache_ratio["prompt"] < 1.0  # output pages are compressed too
    assert (tmp_path / "out" / "page_0.png").is_file()
    assert "character accuracy:" in out
    floor = re.search(r"scored as if read from this one: ([\d.]+)\)", out)  # the next page's text
    assert floor, out
    assert 0.0 <= float(floor.group(1)) <= 1.0


def test_demo_missing_prompt_file_is_one_clear_error(tmp_path, capsys):
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    code = main(["demo", "--model", str(tmp_path / "m"), "--prompt-file", str(tmp_path / "no.txt")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_the_bundled_prompt_is_held_out_moby_dick(tiny_tokenizer):
    from vist2.demo import demo_prompt

    prompt = demo_prompt(None, tiny_tokenizer, 2048)
    assert len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]) >= 2000
    assert "Starbuck" in prompt  # the end of the novel, which training never reads

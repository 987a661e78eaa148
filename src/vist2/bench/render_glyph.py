"""Glyph's own renderer (thu-coai/Glyph), run from a checkout in a subprocess and timed.

What is notable here
- Glyph's code is never part of vist2: `--glyph-dir` names a checkout, and `GlyphSession` runs
  vist2's harness (render_glyph_worker.py, by path) under a Python that has Glyph's
  dependencies, with the checkout's scripts/ folder as working directory.
- A session starts the process, which imports Glyph's module and makes one warm-up call; each
  `one_pass()` then renders all texts once and reports the seconds the pass took inside the
  subprocess, so interpreter start, imports and the first call stay apart from the passes.
- Glyph's config file for the language is used as it stands (only the font may be swapped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The Glyph paths of `vist2 bench render`, in the order they are run and shown.
GLYPH_DOCUMENT = "glyph"
GLYPH_PER_CHUNK = "glyph-per-chunk"
GLYPH_OWN_FONT = "glyph-own-font"

# vist2's own harness, run by path under the Python that has Glyph's dependencies: it imports
# Glyph's module from the checkout, warms it up, then renders the job's texts once per "pass" line
# read on stdin and answers with one JSON line per request.
GLYPH_WORKER = Path(__file__).resolve().with_name("render_glyph_worker.py")


def glyph_config_path(glyph_dir: Path, lang: str) -> Path:
    """Glyph's own page config for a language: config/config_en.json or config/config_zh.json."""
    path = Path(glyph_dir) / "config" / f"config_{lang}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {glyph_dir} a checkout of thu-coai/Glyph?")
    return path


def glyph_config_font(glyph_dir: Path, lang: str) -> Path:
    """The font file Glyph's config names (relative paths are relative to its scripts/ folder)."""
    font = json.loads(glyph_config_path(glyph_dir, lang).read_text(encoding="utf-8"))["font-path"]
    return (Path(glyph_dir) / "scripts" / font).resolve()


class GlyphSession:
    """Glyph's own `text_to_images` in a subprocess, rendering `texts` once per `one_pass()`.

    `glyph_dir` is a checkout of thu-coai/Glyph; each text is one call (one document -> as many
    A4 pages as it fills) and a pass renders them all, writing its PNG files under `workdir`.
    Glyph's config for `lang` ("en"/"zh") is used as it stands, except the font when
    `font_path` is given. `python` must have reportlab and pdf2image, with poppler's `pdftoppm`
    on PATH. The process starts, imports Glyph's module and makes one warm-up call on the first
    `warmup_chars` characters before the constructor returns; `finish()` ends it and sums up.
    """

    def __init__(
        self,
        glyph_dir: str | os.PathLike[str],
        texts: Sequence[str],
        workdir: str | os.PathLike[str],
        python: str = sys.executable,
        lang: str = "en",
        font_path: str | None = None,
        warmup_chars: int = 2000,
    ) -> None:
        glyph_dir = Path(glyph_dir).resolve()
        scripts = glyph_dir / "scripts"
        if not (scripts / "word2png_function.py").is_file():
            raise FileNotFoundError(
                f"{scripts / 'word2png_function.py'} not found; --glyph-dir must be a checkout "
                "of thu-coai/Glyph"
            )
        self.texts = [t for t in texts if t.strip()]
        if not self.texts:
            raise ValueError("no non-blank text to render")
        self.python = python
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        job = {
            "scripts_dir": str(scripts),
            "config_path": str(glyph_config_path(glyph_dir, lang)),
            "font_path": font_path,
            "texts": self.texts,
            "out_dir": str(workdir / "pages"),
            "warmup_chars": warmup_chars,
        }
        job_path = workdir / "job.json"
        job_path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        self.pass_s: list[float] = []
        self.pages: int | None = None
        self._stderr = (workdir / "stderr.txt").open("w+", encoding="utf-8")
        start = time.perf_counter()
        # cwd = scripts/, as Glyph's own scripts are run (its configs name fonts relative to it).
        self._proc = subprocess.Popen(
            [python, str(GLYPH_WORKER), str(job_path)],
            cwd=scripts,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        try:
            ready = self._receive()
        except BaseException:
            self.close()
            raise
        # Interpreter start: the wall time before the worker's first line ran.
        self.startup = {
            "interpreter_s": max(0.0, time.perf_counter() - start - ready["elapsed_s"]),
            "import_s": ready["import_s"],
            "warmup_s": ready["warmup_s"],
        }

    def _receive(self) -> dict[str, Any]:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            code = self._proc.wait()
            self._stderr.seek(0)
            raise RuntimeError(
                f"Glyph's renderer failed under {self.python} (exit {code}). It needs "
                "`pip install reportlab pdf2image pillow numpy tqdm` in that Python and "
                f"poppler's pdftoppm on PATH (Debian: poppler-utils).\n{self._stderr.read()[-3000:]}"
            )
        return json.loads(line)

    def _send(self, line: str) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._receive()  # raises with the worker's error output

    def one_pass(self) -> float:
        """Render all texts once; the seconds the pass took inside the subprocess."""
        self._send("pass")
        reply = self._receive()
        self.pass_s.append(reply["pass_s"])
        self.pages = reply["pages"]
        return reply["pass_s"]

    def finish(self) -> dict[str, Any]:
        """End the subprocess; {"pages_per_s", "chars_per_s", "pages", "chars", "calls",
        "repeats", "pass_s_median", "startup", "fractions" (share of the passes in font loading /
        reportlab / poppler / PNG writing), "page_px" (median width, height), "page_px_range",
        "config", "versions"} over the passes made (at least one)."""
        if not self.pass_s:
            self.one_pass()
        self._send("quit")
        info = self._receive()
        self.close()
        median = statistics.median(self.pass_s)
        chars = sum(len(t) for t in self.texts)
        fractions = {k: v / sum(self.pass_s) for k, v in info["spent"].items()}
        fractions["reportlab"] = max(0.0, 1.0 - sum(fractions.values()))
        widths = sorted(w for w, _ in info["page_sizes"]) or [0]
        heights = sorted(h for _, h in info["page_sizes"]) or [0]
        return {
            "pages_per_s": self.pages / median,
            "chars_per_s": chars / median,
            "pages": self.pages,
            "chars": chars,
            "calls": len(self.texts),
            "repeats": len(self.pass_s),
            "pass_s_median": median,
            "startup": self.startup,
            "fractions": fractions,
            "page_px": [statistics.median(widths), statistics.median(heights)],
            "page_px_range": [[widths[0], heights[0]], [widths[-1], heights[-1]]],
            "config": info["config"],
            "versions": info["versions"],
        }

    def close(self) -> None:
        """Stop the subprocess if it still runs (finish() calls this)."""
        if self._proc.poll() is None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> GlyphSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_glyph_renderer(
    glyph_dir: str | os.PathLike[str],
    texts: Sequence[str],
    workdir: str | os.PathLike[str],
    python: str = sys.executable,
    lang: str = "en",
    font_path: str | None = None,
    seconds: float = 3.0,
    min_repeats: int = 1,
    max_repeats: int = 100,
    warmup_chars: int = 2000,
) -> dict[str, Any]:
    """Time Glyph's own `text_to_images` (thu-coai/Glyph checkout at `glyph_dir`) on `texts`.

    A `GlyphSession`: warm-up, then timed passes for about `seconds` (at least `min_repeats`);
    the median pass counts. Returns `GlyphSession.finish()`'s dict (pages/s, chars/s, startup
    times apart from the passes, where the time goes, page sizes, Glyph's config and versions).
    """
    with GlyphSession(glyph_dir, texts, workdir, python, lang, font_path, warmup_chars) as s:
        end = time.perf_counter() + seconds
        while len(s.pass_s) < min_repeats or (
            time.perf_counter() < end and len(s.pass_s) < max_repeats
        ):
            s.one_pass()
        return s.finish()


def _poppler_version() -> str | None:
    exe = shutil.which("pdftoppm")
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True)
    match = re.search(r"version (\S+)", out.stderr + out.stdout)
    return match.group(1) if match else None


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe_glyph_checkout(glyph_dir: Path, python: str) -> dict[str, Any]:
    """Where Glyph's renderer comes from: checkout, commit (None outside a git work tree), the
    Python it runs under, poppler's version and the function timed."""
    return {
        "dir": str(glyph_dir),
        "commit": _git_commit(glyph_dir),
        "python": python,
        "poppler": _poppler_version(),
        "script": "scripts/word2png_function.py: text_to_images",
    }

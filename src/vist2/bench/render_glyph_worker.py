"""vist2 harness: times thu-coai/Glyph's text_to_images, one pass per "pass" line on stdin.

What is notable here
- This file is a program, not a library module: `GlyphSession` (vist2.bench.render_glyph) runs it
  by path, `python render_glyph_worker.py JOB.json`, under the Python that has Glyph's
  dependencies, with Glyph's scripts/ folder as the working directory. That Python need not have
  vist2 installed, so the file imports only the standard library, Pillow and Glyph's module.
- The job file names Glyph's scripts/ folder, its config file, an optional font, the texts and
  the folder for the PNG files. The worker imports `word2png_function`, warms it up on the first
  `warmup_chars` characters, answers with one JSON line, then renders all texts once per "pass"
  line read on stdin (one JSON line each) and, on any other line, sums up in a last JSON line.
- Where the time goes: timing wrappers around the functions Glyph's module calls (font loading,
  poppler) and around `PIL.Image.Image.save` (PNG writing); the rest of a pass is reportlab.
- Whatever Glyph's code prints goes to stderr: stdout is the reply channel.
"""

import time

T0 = time.perf_counter()  # the first line that runs: the parent counts interpreter start up to it
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_timers(w, image_class, spent, sizes):
    """Wrap Glyph's font loading and poppler calls and PNG saving so they add to `spent`; every
    saved image's size is appended to `sizes`."""

    def timed(fn, bucket):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[bucket] += time.perf_counter() - t

        return wrapper

    for name, bucket in (
        ("TTFont", "font"),
        ("pdfinfo_from_bytes", "poppler"),
        ("convert_from_bytes", "poppler"),
    ):
        if hasattr(w, name):
            setattr(w, name, timed(getattr(w, name), bucket))
    pil_save = image_class.save

    def timed_save(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return pil_save(self, *args, **kwargs)
        finally:
            spent["png"] += time.perf_counter() - t
            sizes.append(list(self.size))

    image_class.save = timed_save


def summary(spent, first_sizes, config):
    """The last reply: time spent per bucket, page sizes of the first pass, config, versions."""
    shown = {}
    for key, value in config.items():
        shown[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return {
        "spent": spent,
        "page_sizes": first_sizes or [],
        "config": shown,
        "versions": {
            "python": sys.version.split()[0],
            "reportlab": version("reportlab"),
            "pdf2image": version("pdf2image"),
            "pillow": version("pillow"),
            "numpy": version("numpy"),
        },
    }


def main():
    reply = sys.stdout
    sys.stdout = sys.stderr  # whatever Glyph's code prints stays off the reply channel

    def send(message):
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    sys.path.insert(0, job["scripts_dir"])
    start = time.perf_counter()
    import word2png_function as w
    from PIL import Image

    import_s = time.perf_counter() - start
    spent = {"font": 0.0, "poppler": 0.0, "png": 0.0}
    sizes = []
    install_timers(w, Image.Image, spent, sizes)

    config = w.load_config(job["config_path"])
    if job.get("font_path"):
        config["font-path"] = job["font_path"]
    texts = job["texts"]
    out_dir = job["out_dir"]

    def render(text, uid):
        paths = w.text_to_images(text=text, output_dir=out_dir, config_dict=config, unique_id=uid)
        return len(paths)

    start = time.perf_counter()
    render(texts[0][: job["warmup_chars"]], "warmup")
    warmup_s = time.perf_counter() - start
    for key in spent:
        spent[key] = 0.0
    sizes.clear()
    send({"import_s": import_s, "warmup_s": warmup_s, "elapsed_s": time.perf_counter() - T0})
    first_sizes = None
    for line in sys.stdin:
        if line.strip() != "pass":
            break
        start = time.perf_counter()
        pages = sum(render(text, f"t{i:05d}") for i, text in enumerate(texts))
        pass_s = time.perf_counter() - start
        if first_sizes is None:
            first_sizes = list(sizes)
        send({"pass_s": pass_s, "pages": pages})
    send(summary(spent, first_sizes, config))


if __name__ == "__main__":
    # Run by path, Python puts this file's folder first on sys.path: drop it, so that vist2's
    # sibling modules (render.py, cache.py, ...) cannot shadow what Glyph's code imports.
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0]) == here:
        del sys.path[0]
    main()

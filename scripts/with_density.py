"""Copy a VIST2 model at another compression ratio: the same weights, K text tokens per page.

β (visual tokens per page) is fixed by the page and the encoder, so a new density is a new K:
r = K / β. Used for the r = 2 / 4 / 8 sweep of docs/model/vist2-small.md, where three copies of
one model are trained on the OCR stage with the same steps, each at its own density. The
source's training record (training.json) goes along, marked `converted`.

    python scripts/with_density.py vist2-small --page-tokens 128 --out /work/runs/r8-init

`--line-height` and `--margin` also change how its pages are drawn (`RenderConfig.line_height`,
`.margin`): `--line-height 16 --margin 0` puts every line inside one row of a windowed encoder's
32 px cells (run 38 of docs/model/vist2-small.md).
"""

from __future__ import annotations

import argparse

from vist2.config import VIST2Config
from vist2.errors import Vist2Error
from vist2.loading import load_model, save_model
from vist2.model import VIST2Model
from vist2.render import RenderConfig
from vist2.training.export import carry_history


def density_config(
    config: VIST2Config, page_tokens: int, render: dict | None = None
) -> VIST2Config:
    """`config` with K = page_tokens and r = K / β (β unchanged), its `render` fields updated
    with `render`."""
    ratio = page_tokens / config.visual_tokens_per_page
    new = config.replaced(chunk_tokens=page_tokens, compression_ratio=ratio, render=render or {})
    RenderConfig.from_dict(new.render)  # a pitch or margin the page cannot take: ConfigError
    return new


def with_density(source: VIST2Model, page_tokens: int, render: dict | None = None) -> VIST2Model:
    model = VIST2Model(density_config(source.config, page_tokens, render))
    model.load_state_dict(source.state_dict())
    return model.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model directory or a shipped name (vist2-small)")
    p.add_argument("--page-tokens", type=int, required=True, help="K, text tokens per page")
    p.add_argument("--line-height", type=int, help="a fixed line pitch in pixels (render)")
    p.add_argument("--margin", type=int, help="the page margin in pixels (render)")
    p.add_argument("--out", required=True, help="directory to write")
    args = p.parse_args()
    try:
        convert(args)
    except Vist2Error as err:  # a missing model, a K or window the config rejects: one line
        raise SystemExit(f"with_density.py: {err}") from None


def convert(args: argparse.Namespace) -> None:
    render = {
        field: value
        for field, value in (("line_height", args.line_height), ("margin", args.margin))
        if value is not None
    }
    source, tokenizer = load_model(args.model)
    model = with_density(source.float(), args.page_tokens, render)
    save_model(model, tokenizer, args.out)
    options = "".join(f" --{field.replace('_', '-')} {value}" for field, value in render.items())
    carry_history(
        args.model, args.out, f"scripts/with_density.py --page-tokens {args.page_tokens}{options}"
    )
    r = model.config.compression_ratio
    drawn = f", render {render}" if render else ""
    print(f"wrote {args.out}: {args.model} with K = {args.page_tokens} (r = {r:g}){drawn}")


if __name__ == "__main__":
    main()

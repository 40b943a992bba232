"""report.html: the study on one self-contained page, opened from the artifacts folder without a server.

The configuration table (every metric with its interval over seeds and the comparison to the model's
default, sortable by a click on a column), each model's best run with its fidelity, diversity and
memorisation and what it was flagged for, the report's figures, per configuration the last sample grid of
each seed beside the real grid, each run's memorisation figure (its closest generated and training slices),
the table of runs, and the protocol of every number. Images are relative
links to the PNGs in the artifacts folder and its run folders; no CDN, no framework, a few lines of plain
JavaScript for sorting.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from heartjobs import atomic
from heartjobs.report import configurations
from heartjobs.store.rundir import REPORT_PAGE, RunDir
from heartjobs.store.status import now_iso

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
.scroll { overflow-x: auto; }
td.runs { white-space: nowrap; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " ▲"; } th.sorted-desc::after { content: " ▼"; }
td.protocol { min-width: 28em; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { max-width: 70em; color: #444; }
.grids { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 1.5em; }
figure { margin: 0; } figure img { width: 192px; image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-size: 12px; }
.figure img { max-width: 100%; border: 1px solid #eee; }
figure.pairs img { width: auto; max-width: 640px; }
td.flagged { color: #a00; font-weight: 600; }
"""

# Click a header: sort the table's rows by that column (numbers by data-sort where a cell has one).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var column = th.cellIndex;
    var table = th.closest("table"), body = table.tBodies[0];
    var ascending = !th.classList.contains("sorted-asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
    th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
    var key = function (row) {
      var cell = row.cells[column], value = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent;
      var number = parseFloat(value);
      return isNaN(number) ? [1, value] : [0, number];
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      var order = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _link(path: str | Path, root: Path) -> str:
    """A path as a relative URL from the page's folder, percent-encoded (no quote, bracket or colon left:
    a file name can neither end the attribute nor become a scheme), ready for an href or src."""
    relative = os.path.relpath(Path(path).resolve(), root.resolve())
    return html.escape(quote(Path(relative).as_posix()), quote=True)


def _e(text: object) -> str:
    """Any value on the page, as text or inside an attribute: every one may come from a file of a run
    folder made elsewhere (a name, a seed, a label), so every one is escaped, quotes included."""
    return html.escape(str(text), quote=True)


def protocol_text(values: dict) -> str:
    """How a configuration's numbers were measured and trained, in words."""
    if "dims" not in values:
        return "not measured"
    if values.get("features", "inception") != "inception":
        weights = f"{values['features']} features (not comparable to Inception FID)"
    elif values["standard_weights"]:
        weights = "standard Inception weights"
    else:
        weights = "other Inception weights (not comparable)"
    return (
        f"{weights}, n={values['n_generated']} × {values['repeats']} repeats, dims {values['dims']}, "
        f"normalize {values['normalize']}, real n={values['n_real']}; {values['epochs']} epochs, tf32 "
        f"{values['tf32']}, bf16 {values['bf16']}"
    )


def _table(table_id: str, head: str, body: list[str]) -> str:
    rows = "".join(body)
    return f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'  # noqa: E501


def _figure(src: str, alt: str, caption: str) -> str:
    """An image with its caption; `caption` is HTML."""
    return f'<figure><img src="{src}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'


def _config_table(configs: list[dict], root: Path, mark: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in [*configurations.HEADER[:-1], "protocol", "runs"])
    body = []
    for config in configs:
        texts = configurations.cells(config, mark)[:-1]
        sort_values = [
            None, None, config["n"], None,
            *((config[m] or {}).get("mean") for m in configurations.METRICS),
            None,
            *((config["vs_reference"].get(m) or {}).get("difference") for m in ("fid", "frd")),
            *((config.get(keys[0]) or {}).get("mean") for keys in configurations.GROUPS.values()),
            (config.get("memorised_runs") or {}).get("flagged"),
            config["thesis_fid"],
        ]  # fmt: skip
        cells = []
        for text, value in zip(texts, sort_values, strict=True):
            attribute = f' class="num" data-sort="{_e(value)}"' if value is not None else ""
            cells.append(f"<td{attribute}>{_e(text)}</td>")
        cells.append(f'<td class="protocol">{_e(protocol_text(config["protocol_values"] or {}))}</td>')
        links = "<br>".join(f'<a href="{_link(run["run_dir"], root)}/">{_e(run["job"])}</a>' for run in config["runs"])
        cells.append(f'<td class="runs">{links or "-"}</td>')
        body.append(f'<tr id="{_e(config["key"])}">' + "".join(cells) + "</tr>")
    return _table("configurations", head, body)


def _grids(configs: list[dict], root: Path) -> str:
    parts = []
    for config in configs:
        figures = []
        for run in config["runs"]:
            samples = RunDir(run["run_dir"]).sample_grids()
            if samples:
                folder = f'<a href="{_link(run["run_dir"], root)}/">{_e(run["job"])}</a>'
                caption = f"seed {_e(run['seed'])}, {_e(samples[-1].stem)}: {folder}"
                figures.append(_figure(_link(samples[-1], root), f"{run['job']} samples", caption))
        real = RunDir(config["runs"][0]["run_dir"]) / RunDir.REAL_GRID if config["runs"] else None
        if real is not None and real.is_file():
            figures.append(_figure(_link(real, root), "real", "real"))
        if figures:
            title = f"<h3>{_e(config['model'])}: {_e(config['configuration'])}</h3>"
            parts.append(f'{title}<div class="grids">{"".join(figures)}</div>')
    return "".join(parts)


def _runs_table(rows: list[dict], root: Path, header: list[str], cells) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        texts = cells(row)
        if row["run_dir"]:
            texts[0] = f'<a href="{_link(row["run_dir"], root)}/">{_e(texts[0])}</a>'
        else:
            texts[0] = _e(texts[0])
        body.append("<tr>" + "".join(f"<td>{t if i == 0 else _e(t)}</td>" for i, t in enumerate(texts)) + "</tr>")
    return _table("runs", head, body)


def _best_table(best: tuple | None, root: Path) -> str:
    """Each model's best run (report.summary.best_runs) with its fidelity, diversity and memorisation; the
    run links to its folder, a flagged one is set apart."""
    header, texts, entries, rule = best or ([], [], [], "")
    if not entries:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for cells, entry in zip(texts, entries, strict=True):
        parts = [f"<td>{_e(text)}</td>" for text in cells]
        parts[1] = f'<td><a href="{_link(entry["run_dir"], root)}/">{_e(cells[1])}</a></td>'
        if entry["concerns"]:
            parts[-1] = f'<td class="flagged">{_e(cells[-1])}</td>'
        body.append("<tr>" + "".join(parts) + "</tr>")
    return f'<h2>Best per model</h2>\n<p class="note">Flagged (never passed over): {_e(rule)}.</p>\n' + _table(
        "best", head, body
    )


def _memorisation_figures(rows: list[dict], root: Path) -> str:
    """Each run's memorisation figure (the closest generated | training pairs), beside its verdict. The path
    was checked by the report (a PNG in the run folder, through no link)."""
    figures = []
    for row in rows:
        if not row.get("memorisation_figure"):
            continue
        folder = f'<a href="{_link(row["run_dir"], root)}/">{_e(row["job"])}</a>'
        verdict = f"memorised: {row['memorised_spaces'] or 'flagged'}" if row["memorised"] else "not memorised"
        caption = f"{folder}: {_e(verdict)}"
        image = _figure(_link(row["memorisation_figure"], root), f"{row['job']} memorisation pairs", caption)
        figures.append(image.replace("<figure>", '<figure class="pairs">', 1))
    if not figures:
        return ""
    return (
        "<h2>Memorisation: the closest generated images and their nearest training slices</h2>"
        f'<div class="grids">{"".join(figures)}</div>'
    )


def _protocols(protocols: list[tuple[list[str], str]], title: str) -> str:
    items = "".join(f"<li>{_e(', '.join(jobs))}: {_e(text)}</li>" for jobs, text in protocols)
    return f"<h2>{_e(title)}</h2>\n<ul>{items}</ul>" if items else ""


def prepared_set_text(source: dict) -> str:
    """One set the runs trained on (report.summary.data_sources), in words after its folder: its content
    hash, how many runs, and a fetched heart's dataset, DOI, licence and citation. Plain text: each page
    escapes it its own way."""
    text = f"(content hash {source['content_hash'][:16]}; {len(source['jobs'])} run(s)): "
    if dataset := source.get("dataset"):
        return text + (
            f"{dataset['name']} from the Human Organ Atlas, doi:{dataset['doi']}, licence {dataset['licence']}; "
            f"cite: {dataset['citation']}"
        )
    return text + "no dataset recorded (prepared from slices or the phantom)"


def _data_list(prepared_sets: list[dict]) -> str:
    items = "".join(f"<li><code>{_e(s['prepared'])}</code> {_e(prepared_set_text(s))}</li>" for s in prepared_sets)
    return f"<h2>Data</h2>\n<ul>{items}</ul>" if items else ""


def write_page(root: Path, rows: list[dict], configs: list[dict], figures: list[Path], *, note: str, mark: str,
               header: list[str], cells, prepared_sets: list[dict] = (), best: tuple | None = None,
               protocols: list[tuple[list[str], str]] = (),
               protocols_title: str = "Fidelity, diversity and memorisation: protocol") -> Path:  # fmt: skip
    """Write root/report.html; returns its path. `best`: (its header, its rows as text, report.summary's
    best_runs, the rule that flags one); `protocols`: the one-question numbers' protocols with their jobs."""
    root = Path(root)
    images = "".join(
        f'<div class="figure"><h3>{_e(p.stem.removeprefix("report_").replace("_", " "))}</h3>'
        f'<img src="{_link(p, root)}" alt="{_e(p.stem)}"></div>'
        for p in figures
    )
    measured = sum(c["n"] for c in configs)
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>heartjobs study: {_e(root.resolve().name)}</title>
<style>{STYLE}</style></head><body>
<h1>heartjobs study: {_e(root.resolve())}</h1>
<p>{len(configs)} configurations, {measured} measured runs of {len(rows)} jobs; written {_e(now_iso())}.</p>
<h2>Configurations</h2>
<p class="note">{_e(configurations.NOTE)}</p>
{_config_table(configs, root, mark)}
{_best_table(best, root)}
<h2>Figures</h2>
{images or "<p>No figures: nothing measured to plot yet.</p>"}
<h2>Samples: the last grid of each seed beside the real grid</h2>
{_grids(configs, root) or "<p>No sample grids yet.</p>"}
{_memorisation_figures(rows, root)}
<h2>Runs</h2>
<p class="note">{_e(note)}</p>
{_runs_table(rows, root, header, cells)}
{_protocols(list(protocols), protocols_title)}
{_data_list(prepared_sets)}
<script>{SORT_SCRIPT}</script>
</body></html>
"""
    path = root / REPORT_PAGE
    atomic.write_bytes(path, body.encode())
    return path

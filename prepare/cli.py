"""`prepare_data.py`: FiftyOne dataset -> prepared folder, for one or several taxonomies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.cli import UserError, run
from common.names import check_name
from common.settings import load_settings
from prepare.layout import default_output_dir
from prepare.pipeline import PrepareOptions, prepare_dataset, print_summary
from prepare.splits import DEFAULT_RATIOS, check_split_policy, parse_ratios
from prepare.taxonomy import available_taxonomies, load_taxonomy, taxonomy_dirs


def _taxonomy_names(taxonomy: str | Sequence[str], dirs: Sequence[Path]) -> list[str]:
    names = [taxonomy] if isinstance(taxonomy, str) else list(taxonomy)
    names = [part.strip() for name in names for part in str(name).split(",") if part.strip()]
    return available_taxonomies(dirs) if names == ["all"] else names


def prepare(
    dataset_name: str,
    taxonomy: str | None = None,
    output_dir: str | None = None,
    split_policy: str = "tags",
    ratios: str | Sequence[float] = DEFAULT_RATIOS,
    seed: int | None = None,
    site: str | None = None,
    write_tags: bool = False,
    unknown: str = "error",
    overwrite: bool = False,
    workers: int | None = None,
) -> None:
    """Rasterize DATASET_NAME's polygons into class-index masks in a train/val/test folder.

    Args:
        dataset_name: the FiftyOne dataset made by data_engineering.
        taxonomy: taxonomy level (default LABEL_TAXONOMY): finegrained, extended, main_families,
            agnostic, a file in TAXONOMY_DIRS, several separated by commas, or `all`.
        output_dir: the folder to write (default DATA_ROOT/prepared/<dataset>_<taxonomy>).
        split_policy: `tags` (the samples' train/val/test tags), `grouped` (by quadrat, see --ratios) or
            `leave-site-out` (the photos of --site are the test set; the other sites split into train and val by quadrat).
        ratios: train,val,test fractions for --split-policy grouped (leave-site-out uses the train and val parts).
        seed: seed of the grouped and leave-site-out splits (default SEED).
        site: the site held out as the test set by --split-policy leave-site-out (a sample's `site` field).
        write_tags: also write the chosen split back to the dataset as sample tags.
        unknown: what to do with a label the taxonomy does not know: error, other (draw it as
            Other) or ignore (draw it as 255, ignored in training).
        overwrite: empty an output folder that holds something else, and rebuild from scratch.
        workers: processes rasterizing in parallel (default WORKERS).
    """
    check_name(dataset_name, "dataset name", "pass the name of a FiftyOne dataset made by data_engineering")
    check_split_policy(split_policy, site)
    settings = load_settings(label_taxonomy=taxonomy, seed=seed, workers=workers)
    dirs = taxonomy_dirs(settings.taxonomy_dirs)
    names = _taxonomy_names(settings.label_taxonomy, dirs)
    if output_dir and len(names) > 1:
        raise UserError(
            "--output-dir takes a single taxonomy; leave it out to write one folder per taxonomy under DATA_ROOT/prepared"
        )
    taxonomies = [load_taxonomy(name, dirs) for name in names]

    from prepare import fiftyone_source  # imports fiftyone: kept out of worker processes

    dataset = fiftyone_source.load_dataset(dataset_name)
    records = fiftyone_source.read_records(dataset, settings.gt_field_name)
    source = fiftyone_source.describe(dataset, settings.gt_field_name)
    for chosen in taxonomies:
        default = default_output_dir(settings.data_root, dataset_name, chosen.name)
        root = Path(output_dir).expanduser().resolve() if output_dir else default
        print(f"{dataset_name} -> {chosen.name} ({len(chosen.classes)} classes) -> {root}")
        options = PrepareOptions(
            taxonomy=chosen,
            output_dir=root,
            source=source,
            split_policy=split_policy,
            ratios=parse_ratios(ratios),
            seed=settings.seed,
            site=site,
            unknown=unknown,
            overwrite=overwrite,
            workers=settings.workers,
        )
        report = prepare_dataset(records, fiftyone_source.annotation_reader(dataset, settings.gt_field_name), options)
        print_summary(report, chosen, root)
    if write_tags:
        fiftyone_source.write_split_tags(dataset, report.assignment)
        print(f"wrote the split of {len(report.assignment)} samples to {dataset_name!r} as train/val/test tags")


def main() -> None:
    run(prepare, secrets=load_settings().secrets)

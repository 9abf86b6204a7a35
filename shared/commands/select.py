"""`dustspot select`: which scans a labeller should look at first."""
import click


@click.command("select")
@click.argument("out_root")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True)
def select(out_root, top):
    """Rank the results under OUT_ROOT for labelling: most uncertain spots, then most spots."""
    from ..review import load_reports, rank_for_labelling
    for row in rank_for_labelling(load_reports(out_root))[:top]:
        click.echo(f"{row['name']}\t{row['uncertain']} uncertain\t{row['spots']} spots")

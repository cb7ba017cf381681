"""Run trees (#15): children point at their root, which holds the tree's shared counters.

Children made before this migration get their root filled in, level by level, so the tree
limits and the reconciler's rule (a child is its parent's to resume) cover them too.
"""

from decimal import Decimal

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import F, OuterRef, Subquery


def fill_roots(apps, schema_editor):  # noqa: ANN001, ANN201 - migration signature
    Run = apps.get_model("runs", "Run")
    Run.objects.filter(depth=1, parent__isnull=False).update(root_id=F("parent_id"))
    parents_root = Run.objects.filter(pk=OuterRef("parent_id")).values("root_id")[:1]
    level = 2
    while Run.objects.filter(depth=level, parent__isnull=False).exists():
        Run.objects.filter(depth=level, parent__isnull=False).update(root_id=Subquery(parents_root))
        level += 1


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_drop_redundant_fk_indexes"),
        ("tenants", "0003_containment_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="child_key",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="run",
            name="root",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="descendants",
                to="runs.run",
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="tree_children",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="tree_cost_usd",
            field=models.DecimalField(decimal_places=6, default=Decimal("0"), max_digits=14),
        ),
        migrations.AddField(
            model_name="run",
            name="tree_steps",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="tree_tokens",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(
                condition=models.Q(("child_key", ""), _negated=True),
                fields=("parent", "child_key"),
                name="uniq_run_child_key",
            ),
        ),
        migrations.RunPython(fill_roots, migrations.RunPython.noop),
    ]

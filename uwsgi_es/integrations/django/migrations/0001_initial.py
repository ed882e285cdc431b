from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="StoredEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("originator_id", models.UUIDField()),
                ("originator_version", models.BigIntegerField()),
                ("topic", models.CharField(max_length=255)),
                ("state", models.TextField()),
            ],
            options={"db_table": "integer_sequenced_items"},
        ),
        migrations.AddConstraint(
            model_name="storedevent",
            constraint=models.UniqueConstraint(
                fields=("originator_id", "originator_version"), name="integer_sequenced_items_originator"
            ),
        ),
    ]

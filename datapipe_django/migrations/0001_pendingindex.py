from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="PendingIndex",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("document", models.CharField(help_text="The Document's dotted path.",
                                              max_length=200)),
                ("object_pk", models.CharField(max_length=100)),
                ("reason", models.CharField(blank=True, max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "verbose_name": "pending search index update",
                "constraints": [
                    models.UniqueConstraint(fields=("document", "object_pk"),
                                            name="datapipe_pendingindex_unique"),
                ],
            },
        ),
    ]

from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "example_project.payouts"
    label = "payouts"
    verbose_name = "Payouts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Declares (and registers) the pipelines, so `manage.py check` validates them.
        from example_project.payouts import pipelines  # noqa: F401

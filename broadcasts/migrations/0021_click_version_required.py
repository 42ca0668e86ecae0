import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """Apart from 0019: on PostgreSQL the copy's deferred foreign key checks must run first."""

    dependencies = [
        ("broadcasts", "0020_click_version"),
    ]

    operations = [
        migrations.AlterField(
            model_name='click',
            name='broadcast',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='clicks', to='broadcasts.broadcast'),
        ),
    ]

"""Unit tests for `promote build-completed --file`: the file it names is one intake may read."""

from cli.ops import into_drop
from shared.platform.settings import Settings


def test_a_file_already_under_an_artifact_root_is_published_where_it_is(tmp_path):
    settings = Settings(var_dir=tmp_path)
    settings.drop_dir.mkdir()
    (settings.drop_dir / "app.pyz").write_bytes(b"app")

    assert into_drop(settings, settings.drop_dir / "app.pyz") == settings.drop_dir / "app.pyz"


def test_a_file_elsewhere_is_copied_by_the_caller_into_the_drop_directory(tmp_path):
    settings = Settings(var_dir=tmp_path / "var")
    (tmp_path / "app.pyz").write_bytes(b"app")

    copy = into_drop(settings, tmp_path / "app.pyz")

    assert copy.parent == settings.drop_dir / "cli" and copy.name.endswith("-app.pyz")
    assert copy.read_bytes() == b"app"

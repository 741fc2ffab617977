"""The design documents the code cites are in the repository, and what they name exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FOLDERS = {"nfldm_sdk": "sdk", "nfldm_training": "training", "sim_bridge": "sim_bridge"}
DESIGN_DOCS = ("method.md", "architecture.md", "conventions.md")


def _sources():
    for folder in (*FOLDERS.values(), "tests", "scripts"):
        for f in sorted((ROOT / folder).rglob("*")):
            if f.suffix in (".py", ".sh") and ".venv" not in f.parts and f != Path(__file__).resolve():
                yield f
    yield ROOT / "README.md"


def test_design_documents_exist():
    for name in DESIGN_DOCS:
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


def test_every_cited_design_document_is_in_docs():
    # A citation is "docs/<name>.md"; a bare "method.md" would point at a file outside the repository.
    for f in _sources():
        text = f.read_text()
        for m in re.finditer(r"(?<![\w/])(docs/)?([\w-]+)\.md\b", text):
            cited = m.group(2) + ".md"
            if m.group(1):
                assert (DOCS / cited).is_file(), f"{f.relative_to(ROOT)} cites docs/{cited}, which does not exist"
            else:
                assert cited not in DESIGN_DOCS, f"{f.relative_to(ROOT)} cites {cited} without docs/"


def test_links_in_docs_resolve():
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def _module_exists(dotted: str) -> bool:
    """True when a prefix of `dotted` (e.g. ``nfldm_sdk.rendering.api.HIT_ALPHA``) is a module or package of the tree."""
    first, *rest = dotted.split(".")
    path = ROOT / FOLDERS[first]
    for part in rest:
        if (path / f"{part}.py").is_file():
            return True                      # the remaining parts are attributes of that module
        if not (path / part).is_dir():
            return False
        path = path / part
    return (path / "__init__.py").is_file()


def test_modules_named_in_docs_exist():
    # The documents describe the tree as it is: a module they name that moves must be renamed there too.
    names = re.compile(r"`((?:nfldm_sdk|nfldm_training|sim_bridge)(?:\.\w+)+)")
    for doc in DOCS.glob("*.md"):
        for dotted in names.findall(doc.read_text()):
            assert _module_exists(dotted), f"docs/{doc.name} names {dotted}, which is not in the source tree"


def test_docs_name_nothing_outside_the_repository():
    for doc in DOCS.glob("*.md"):
        text = doc.read_text()
        for outside in ("/work/", "/tmp/", "/home/", "shared/design"):
            assert outside not in text, f"docs/{doc.name} refers to {outside}"

"""What Feast's own commands (`feast plan`, `feast apply`) find in this folder.

Feast imports every module here and registers the objects it finds at module level; every
other module only builds definitions in functions. This one builds, at import, exactly what
`shipdelay features build` applies (`features.repo.definitions`) for the offline folder beside
the registry that the `feature_store.yaml` beside it names, plus the FeatureService of each feature set a
training run applied, so `feast apply` changes nothing and deletes nothing shipdelay made.
shipdelay never imports it.
"""

from pathlib import Path

from features.feast_yaml import repo_objects

for _obj in repo_objects(Path(__file__).resolve().parent):
    globals()[f"_{type(_obj).__name__}_{_obj.name}"] = _obj
del _obj

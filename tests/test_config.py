import pytest

from rolekd.config import ConfigError, config_from_dict, load_config


def test_demo_config_loads_and_overrides_are_typed():
    cfg = load_config(None, ["teacher.train.epochs=3", "student.w_bits=4", "teacher.train.amp=true",
                             "teacher.train.milestones=[0.5, 0.75]"])
    assert cfg.name == "demo"
    assert cfg.teacher.train.epochs == 3 and isinstance(cfg.teacher.train.epochs, int)
    assert cfg.student.w_bits == 4
    assert cfg.teacher.train.amp is True
    assert cfg.teacher.train.milestones == [0.5, 0.75]


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"teacher": {"train": {"epochs": -1}}}, "teacher.train.epochs"),
        ({"teacher": {"trian": {}}}, "teacher.trian"),
        ({"student": {"w_bits": 9}}, "student.w_bits"),
        ({"student": {"a_bits": 0}}, "student.a_bits"),
        ({"teacher": {"train": {"lr": "fast"}}}, "teacher.train.lr"),
        ({"teacher": {"train": {"milestones": [0.6, 0.3]}}}, "teacher.train.milestones"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(raw, field):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, "x.yaml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"x.yaml: {field}:" in msg


def test_unknown_key_says_unknown():
    with pytest.raises(ConfigError, match=r"nmae: unknown key"):
        config_from_dict({"nmae": "x"})


@pytest.mark.parametrize("override, hint", [
    ("seeds=[0,1]", "did you mean pipeline.seeds?"),           # right name, wrong section
    ("teacher.train.epochz=3", "did you mean teacher.train.epochs?"),  # a typo among the section's keys
    ("student.wbits=2", "did you mean student.w_bits?"),
])
def test_unknown_key_suggests_the_field_meant(override, hint):
    with pytest.raises(ConfigError) as exc:
        load_config("demo", [override])
    assert str(exc.value).endswith("unknown key; " + hint)


def test_unknown_key_without_a_likely_match_has_no_guess():
    with pytest.raises(ConfigError) as exc:
        load_config("demo", ["teacher.colour=red"])
    assert str(exc.value).endswith("teacher.colour: unknown key")


def test_override_of_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="teacher.train.epoch: unknown key"):
        load_config("demo", ["teacher.train.epoch=3"])


def test_yaml_cannot_construct_python_objects(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_missing_config_names_what_was_expected():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config_anywhere")


@pytest.mark.parametrize("text", ["", "# only a comment\n\n# and another\n"])
def test_an_empty_config_file_is_refused_not_run_as_the_defaults(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}: the file is empty") and "'demo'" in str(exc.value)
    assert load_config("demo").name == "demo"  # the packaged demo stays available by name


@pytest.mark.parametrize("value", [2.5, True, "two"])
def test_a_bit_width_that_is_not_a_whole_number_names_the_allowed_range(value):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"student": {"w_bits": value}}, "x.yaml")
    expected = f"x.yaml: student.w_bits: expected a bit-width in 1..8 or 32 (full precision), got {value!r}"
    assert str(exc.value) == expected


def test_config_differences_name_each_changed_field_by_dotted_path():
    from rolekd.config import config_differences

    saved = load_config("demo")
    now = load_config("demo", ["teacher.train.lr=0.01", "data.train_subset=500"])
    assert config_differences(saved, now) == [
        "data.train_subset (saved None, now 500)", "teacher.train.lr (saved 0.05, now 0.01)",
    ]
    assert config_differences(saved, load_config("demo")) == []


def test_a_roles_network_section_is_one_method_of_the_config():
    cfg = config_from_dict({"teacher": {"model": "resnet18"}, "student": {"model": "resnet8"}})
    assert cfg.network("teacher") is cfg.teacher and cfg.network("student") is cfg.student
    assert cfg.training().network("student").model == "resnet8"  # what a search trial and a row receive
    with pytest.raises(ValueError, match="^unknown role 'pupil'; expected 'teacher' or 'student'$"):
        cfg.network("pupil")


def test_search_epochs_default_to_the_searched_roles_own_length_as_pba():
    cfg = config_from_dict({"teacher": {"train": {"epochs": 80}}, "student": {"train": {"epochs": 40}}})
    assert (cfg.search_epochs("teacher"), cfg.search_epochs("student")) == (80, 40)
    cfg = config_from_dict({"teacher": {"train": {"epochs": 80}}, "search": {"epochs": 5}})
    assert (cfg.search_epochs("teacher"), cfg.search_epochs("student")) == (5, 5)


def _sections(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _sections(sub))]


def test_every_field_of_every_config_section_has_a_description():
    from rolekd.config import ExperimentConfig, _Section, field_docs

    sections = _sections(_Section)
    assert {"SearchConfig", "TrainConfig", "MethodSettings", "ExperimentConfig"} <= {s.__name__ for s in sections}
    bare = [f"{s.__name__}.{name}" for s in sections for name, f in s.model_fields.items()
            if not (f.description or "").strip()]
    assert bare == [], f"fields without a description (rolekd config shows it): {bare}"
    docs = field_docs(ExperimentConfig())
    assert all(d.description for d in docs) and "student.train.optimizer" in {d.path for d in docs}


def test_field_docs_give_each_keys_value_and_its_default_in_that_place():
    from rolekd.config import field_docs

    docs = {d.path: d for d in field_docs(load_config("demo", ["search.quantile=0.3"]))}
    assert (docs["search.quantile"].value, docs["search.quantile"].default) == (0.3, 0.25)
    assert docs["student.train.optimizer"].default == "adam"  # the student's train defaults, not TrainConfig's
    assert docs["teacher.train.optimizer"].default == "sgd"
    assert docs["search"].section and docs["search"].value is None and docs["search"].description
    assert docs["pipeline.seeds"].value == [0]

"""The study side of revati-tune: the `revati-tune` CLI, study driver, runners and scoring."""

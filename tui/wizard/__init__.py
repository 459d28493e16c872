"""The new-project wizard: a modal of six steps; nothing is written until the last one confirms."""

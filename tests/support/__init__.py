"""Helpers the tests share (fixtures stay in the conftest files; test modules never import
each other): processes, API servers (a real one and an in-process one), the e2e platform,
MLflow servers and job builders."""

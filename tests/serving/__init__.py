"""Tests of bratseg.serving. A package, so that test files of one name in two folders do not clash."""

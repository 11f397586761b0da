"""Tests of bratseg.data. A package, so that test files of one name in two folders do not clash."""

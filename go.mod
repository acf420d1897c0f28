module github.com/chronoforge/chronoforge

go 1.26.0

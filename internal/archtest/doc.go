// Package archtest holds no code: its test enforces the import rules of
// STYLE.md over the whole module (what golangci-lint's depguard would), so a
// package that starts to reach where it must not fails make test.
package archtest

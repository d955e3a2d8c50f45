// Package pipeline parses and validates pipeline specs: the YAML documents
// users write to say what to move, from where, to where, and how to bound
// each task. Every error names the field and the line it was found on.
package pipeline

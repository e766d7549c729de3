package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/verdict-dev/verdict/policy"
)

func init() {
	register("schema", command{
		summary: "print the JSON Schema of policy files, for editors",
		run:     runSchema,
	})
}

const schemaUsage = `Usage: verdict schema

Prints the JSON Schema (draft-07) of policy files. Save it and point the YAML
language server at it for completion and checking in editors; see
docs/POLICY.md. verdict lint remains the authority: the schema cannot express
every rule.
`

func runSchema(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // flag calls it for -h too; errors get a hint below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, schemaUsage)
			return 0
		}
		fmt.Fprintln(stderr, "Run 'verdict schema -h' for usage.")
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "verdict schema: takes no arguments")
		fmt.Fprintln(stderr, "Run 'verdict schema -h' for usage.")
		return 2
	}
	if _, err := stdout.Write(policy.Schema()); err != nil {
		fmt.Fprintln(stderr, "verdict schema:", err)
		return 1
	}
	return 0
}

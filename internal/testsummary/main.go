// Command testsummary reads `go test -json` on its standard input, prints
// what a plain `go test` would (a line per package, and the whole output
// of a test that failed), and ends with a count of the packages and tests
// that ran. It exits 1 if anything failed or did not finish, and with -o
// also writes the count to a file, for `make test`'s last line.
//
//	go test -json ./... | go run ./internal/testsummary -o bin/unit-summary
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is a line of `go test -json` (cmd/test2json), with the fields
// this command reads.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output and build-fail events
	FailedBuild string
}

// tally is what ran, for the last line.
type tally struct {
	packages, withTests int
	passed, failed      int
	skipped             []string
	subtests            int
	broken              []string // packages that failed, or never ended
}

func main() {
	out := flag.String("o", "", "also write the summary line to this file")
	flag.Parse()
	t, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	line := t.String()
	fmt.Println(line)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(line+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(1)
		}
	}
	if !t.ok() {
		os.Exit(1)
	}
}

func (t *tally) ok() bool { return t.failed == 0 && len(t.broken) == 0 && len(t.skipped) == 0 }

// String is the summary line; skipped tests are named, as no skip counts
// as a pass here.
func (t *tally) String() string {
	s := fmt.Sprintf("%d packages (%d with tests), %d tests passed (%d subtests besides)", t.packages, t.withTests, t.passed, t.subtests)
	if t.failed > 0 {
		s += fmt.Sprintf(", %d FAILED", t.failed)
	}
	if len(t.skipped) > 0 {
		s += fmt.Sprintf(", %d SKIPPED (%s)", len(t.skipped), strings.Join(t.skipped, ", "))
	}
	if len(t.broken) > 0 {
		s += ", packages FAILED: " + strings.Join(t.broken, " ")
	}
	return s
}

// summarize copies in's events to w as a plain `go test` prints them and
// counts them.
func summarize(in io.Reader, w io.Writer) (*tally, error) {
	t := new(tally)
	// A test's output is kept until it ends, and shown only if it failed.
	held := make(map[string][]string)
	open := make(map[string]bool) // packages started and not ended
	hasTests := make(map[string]bool)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not an event: go test's own complaint, say. Show it.
			fmt.Fprintln(w, string(line))
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(w, e.Output)
		case e.Action == "build-fail":
			t.broken = append(t.broken, e.ImportPath)
		case e.Action == "start" && e.Test == "":
			open[e.Package] = true
			t.packages++
		case e.Action == "output" && e.Test == "":
			if strings.TrimSpace(e.Output) != "PASS" {
				fmt.Fprint(w, e.Output)
			}
		case e.Action == "output":
			held[key] = append(held[key], e.Output)
		case e.Action == "run":
			hasTests[e.Package] = true
		case e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			sub := strings.Contains(e.Test, "/")
			switch {
			case e.Action == "fail":
				fmt.Fprint(w, strings.Join(held[key], ""))
				if !sub { // a subtest's failure fails its parent too
					t.failed++
				}
			case e.Action == "skip":
				t.skipped = append(t.skipped, e.Package+"."+e.Test)
			case sub:
				t.subtests++
			default:
				t.passed++
			}
			delete(held, key)
		case e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			delete(open, e.Package)
			if e.Action == "fail" && e.FailedBuild == "" {
				t.broken = append(t.broken, e.Package)
				flush(w, held, e.Package) // tests a crash cut short
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for pkg := range open {
		t.broken = append(t.broken, pkg+" (never ended)")
		flush(w, held, pkg)
	}
	t.withTests = len(hasTests)
	return t, nil
}

// flush prints the output held for the tests of pkg that never ended.
func flush(w io.Writer, held map[string][]string, pkg string) {
	var keys []string
	for key := range held {
		if strings.HasPrefix(key, pkg+" ") {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		fmt.Fprint(w, strings.Join(held[key], ""))
		delete(held, key)
	}
}

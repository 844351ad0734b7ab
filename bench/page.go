package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// The page -out writes (docs/performance.md) holds one section per mode of
// the bench, each between markers of its own, then an analysis kept by
// hand. A run replaces its own sections and leaves everything else as it
// was, so the table, the streams measurement and the analysis can be
// brought up to date one at a time.

// endOfGenerated separates the bench's sections from the analysis kept by
// hand; new sections go just above it.
const endOfGenerated = "<!-- End of the generated part. Everything below is kept by hand; the bench must not overwrite it. -->"

const pageIntro = `# Performance

Each section up to the analysis is written by the load benchmark ([bench/README.md](../bench/README.md)
explains the method): it says where and when it was measured and the command that measures it again, which
replaces that section and leaves the rest of this page alone. The analysis at the end is kept by hand.

`

func sectionMarkers(name string) (begin, end string) {
	return "<!-- bench:" + name + " -->", "<!-- /bench:" + name + " -->"
}

// withSection is page with section name's content replaced by content, or
// added above the analysis (at the end when there is none).
func withSection(page, name, content string) string {
	begin, end := sectionMarkers(name)
	block := begin + "\n" + strings.TrimRight(content, "\n") + "\n" + end
	if page == "" {
		page = pageIntro + endOfGenerated + "\n"
	}
	if i := strings.Index(page, begin); i >= 0 {
		if j := strings.Index(page[i:], end); j >= 0 {
			return page[:i] + block + page[i+j+len(end):]
		}
	}
	if i := strings.Index(page, endOfGenerated); i >= 0 {
		return page[:i] + block + "\n\n" + page[i:]
	}
	return strings.TrimRight(page, "\n") + "\n\n" + block + "\n"
}

// writeSections puts sections (name → content) into the page at path,
// creating it if it does not exist.
func writeSections(path string, sections ...[2]string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	page := string(b)
	for _, s := range sections {
		page = withSection(page, s[0], s[1])
	}
	if err := os.WriteFile(path, []byte(page), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// section is a section of docs/performance.md: its heading, provenance, then body.
func section(title string, h host, command, body string) string {
	return "## " + title + "\n\n" + provenance(h, command) + body
}

// provenance is the lines every section starts with: where, when, and how
// to measure again.
func provenance(h host, command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s, %d cores, %s memory; %s; %s, PostgreSQL %s", h.date.UTC().Format("2006-01-02 15:04 MST"),
		h.cpu, h.cores, h.memory, h.os, h.goVersion, h.postgres)
	if h.revision != "" {
		fmt.Fprintf(&b, "; the service at commit %s", h.revision)
	}
	fmt.Fprintf(&b, "; load average before the run %s. Load generator, service and PostgreSQL share the machine; "+
		"other work on it moves every number.\n\n```sh\n%s\n```\n\n", h.loadAverage, command)
	return b.String()
}

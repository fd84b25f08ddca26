package load

import (
	"fmt"
	"strings"
)

// Table prints aligned Markdown columns, so the output of the benchmark and of the soak test can
// go into the README as it is.
type Table struct {
	rows [][]string
}

// NewTable starts a table with its header.
func NewTable(header ...string) *Table { return &Table{rows: [][]string{header}} }

// Row adds a row.
func (t *Table) Row(cells ...string) { t.rows = append(t.rows, cells) }

// Print writes the table to standard output.
func (t *Table) Print() {
	widths := make([]int, len(t.rows[0]))
	for _, r := range t.rows {
		for i, c := range r {
			if len(c) > widths[i] {
				widths[i] = len(c)
			}
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range r {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-len(c)) + " |")
		}
		fmt.Println(b.String())
	}
	line(t.rows[0])
	sep := make([]string, len(widths))
	for i, w := range widths {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, r := range t.rows[1:] {
		line(r)
	}
}

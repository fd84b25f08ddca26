// Command labels2conf turns Docker labels into Traefik's dynamic configuration with Traefik's own
// label decoder (the one its Docker provider uses), printed as JSON. The end-to-end suite feeds
// the labels of examples/docker-compose through it to run them in Traefik without a Docker engine.
//
// Input: one label per line, key=value, on standard input.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/traefik/traefik/v3/pkg/config/label"
)

func main() {
	labels := map[string]string{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			fail(fmt.Errorf("not a key=value label: %q", line))
		}
		labels[k] = v
	}
	conf, err := label.DecodeConfiguration(labels)
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(conf); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "labels2conf:", err)
	os.Exit(1)
}

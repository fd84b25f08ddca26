// Command bench measures what oboexchange costs per request, side by side with the alternatives,
// and prints one table per measurement. `make bench` runs it; see the README's Performance section.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"time"
)

func main() {
	rounds := flag.Int("rounds", 5, "interleaved rounds; each figure is the median over them")
	ops := flag.Int("ops", 20000, "calls per case and round in the in-process (Yaegi) measurement")
	requests := flag.Int("requests", 20000, "requests per case and round through Traefik")
	concurrency := flag.Int("concurrency", 8, "concurrent connections of the load generator")
	memEntries := flag.Int("mem-entries", 100000, "cache entries for the memory measurement (0 skips it)")
	only := flag.String("only", "", "run only this part: yaegi or traefik")
	missDelay := flag.Duration("miss-delay", 20*time.Millisecond, "how long the authorization server takes to answer in the cache-miss case")
	serve := flag.String("serve-forwardauth", "", "internal: run the forwardAuth token-exchange service on this address")
	idpURL := flag.String("token-endpoint", "", "internal: the forwardAuth service's token endpoint")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	var err error
	switch {
	case *serve != "":
		err = serveForwardAuth(*serve, *idpURL)
	case *only == "yaegi":
		err = inProcess(*rounds, *ops, *memEntries)
	case *only == "traefik":
		err = throughTraefik(*rounds, *requests, *concurrency, *missDelay)
	default:
		if err = inProcess(*rounds, *ops, *memEntries); err == nil {
			err = throughTraefik(*rounds, *requests, *concurrency, *missDelay)
		}
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

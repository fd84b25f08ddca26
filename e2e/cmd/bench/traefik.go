package main

func throughTraefik(rounds, requests, concurrency int) error { return nil }

func serveForwardAuth(addr, tokenEndpoint string) error { return nil }

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// The test binary doubles as a tiny TCP tool that runs inside namespaces, so the
// tests need no netcat: with CVLAN_E2E_PROBE set, TestMain runs probe instead of
// the tests.
//
//	listen PORT[,PORT...]   accept on every port, echo each line back, forever
//	connect ADDR:PORT       connect (1 s timeout), send a line, read the echo; exit 0 or 1
//	hold ADDR:PORT          connect, then send a line every 100 ms and print "ok N"
//	                        for each echo, or "lost" and exit 1 (an established flow)
const probeEnv = "CVLAN_E2E_PROBE"

func probe(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "probe: want listen|connect|hold ARG")
		return 2
	}
	switch args[0] {
	case "listen":
		for _, p := range strings.Split(args[1], ",") {
			ln, err := net.Listen("tcp", ":"+p)
			if err != nil {
				fmt.Fprintln(os.Stderr, "probe:", err)
				return 1
			}
			go serveEcho(ln)
		}
		fmt.Println("listening")
		select {}
	case "connect":
		c, err := net.DialTimeout("tcp", args[1], time.Second)
		if err != nil {
			fmt.Println("refused:", err)
			return 1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintln(c, "ping"); err != nil {
			fmt.Println("write:", err)
			return 1
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			fmt.Println("no echo:", err)
			return 1
		}
		fmt.Println("ok")
		return 0
	case "hold":
		c, err := net.DialTimeout("tcp", args[1], time.Second)
		if err != nil {
			fmt.Println("refused:", err)
			return 1
		}
		r := bufio.NewReader(c)
		for n := 1; ; n++ {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintln(c, "hold")
			if _, err := r.ReadString('\n'); err != nil {
				fmt.Println("lost:", err)
				return 1
			}
			fmt.Println("ok", n)
			time.Sleep(100 * time.Millisecond) // the flow's own pace, not synchronization
		}
	}
	return 2
}

func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				c.Write([]byte(line))
			}
		}()
	}
}

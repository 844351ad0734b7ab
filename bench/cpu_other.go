//go:build !linux

package main

import "errors"

// cpuMeter needs Linux's /proc.
type cpuMeter struct{}

func newCPUMeter(*service) (cpuMeter, error) {
	return cpuMeter{}, errors.New("CPU accounting reads /proc, which only Linux has")
}

func (cpuMeter) read() (cpuUse, error) { return cpuUse{}, errors.ErrUnsupported }

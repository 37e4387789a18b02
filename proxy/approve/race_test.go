//go:build race

package approve

const raceEnabled = true

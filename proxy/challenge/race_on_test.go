//go:build race

package challenge

// raceEnabled scales long tests down under the race detector, which makes
// every memory access several times slower.
const raceEnabled = true

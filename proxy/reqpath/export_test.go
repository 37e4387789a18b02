package reqpath

// AttackTargets exposes the refused targets of the attack table to the fuzz
// target in package reqpath_test, as seeds.
func AttackTargets() (methods, targets []string) {
	for _, a := range attacks {
		methods = append(methods, a.method)
		targets = append(targets, a.target)
	}
	return methods, targets
}

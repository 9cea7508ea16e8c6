// The translation layer of the xDS adaptor: proto3-JSON resources (live or from config dumps) →
// the sockmesh model. See README.md in this directory.

export { translateAmbient, authorizationExpr } from './ambient';
export type { AmbientResources } from './ambient';
export { runTranslateCli, translateDocuments, toJsonOutput, TRANSLATE_USAGE } from './cli';
export { translateConfigDump, translateEnvoy } from './envoy';
export type { EnvoyResources } from './envoy';
export { serviceOfCluster } from './envoy-clusters';
export { ANY, NEVER, renderExpr, simplify } from './expr';
export { classifyRbacFilter, policyName, regexToExpr, splitRbacFilters } from './rbac';
export type { RbacDestination, RbacFilterInput, SplitOptions, SplitResult } from './rbac';
export type { DestinationInfo, TranslateResult, TranslateWarning } from './result';
export { validateRbacConfig, validateResource } from './validate';

// Local config source: public API.
export { ConfigError, CONFIG_INVALID, formatIssue, isConfigError, type ConfigIssue } from './errors';
export { canonicalIp, parseIp, type IpFamily, type ParsedIp } from '../core/ip';
export { canonicalJson, loadConfigFile, parseConfigText, isDns1123Label, isDns1123Subdomain, MAX_WEIGHT, type LoadedConfig } from './local-file';
export { ConfigFileSource, type ConfigFileSourceEvents, type ConfigFileSourceOptions } from './watch';

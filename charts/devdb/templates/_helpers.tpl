{{/* Full name: the release name when it already says devdb, else <release>-devdb. */}}
{{- define "devdb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The API's --instance: prefix of database object names and their instance label. */}}
{{- define "devdb.dbInstance" -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{- define "devdb.labels" -}}
app.kubernetes.io/name: devdb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: devdb
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: devdb.selector (dict "ctx" . "component" "api") */}}
{{- define "devdb.selector" -}}
app.kubernetes.io/name: devdb
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "devdb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "devdb.secretsName" -}}{{ include "devdb.fullname" . }}-secrets{{- end -}}
{{- define "devdb.adminTokenSecret" -}}{{ .Values.api.adminTokenSecret | default (include "devdb.secretsName" .) }}{{- end -}}
{{- define "devdb.routerTLSSecret" -}}{{ .Values.router.tls.secretName | default (printf "%s-router-tls" (include "devdb.fullname" .)) }}{{- end -}}
{{- define "devdb.redisURL" -}}redis://{{ include "devdb.fullname" . }}-redis:6379/0{{- end -}}

{{/* Restricted pod security for DevDB's own pods. */}}
{{- define "devdb.podSecurity" -}}
runAsNonRoot: true
{{- if .Values.podSecurity.fixedUIDs }}
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "devdb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
The load balancers' provider preset and the one PROXY protocol switch.
  aws:     AWS Load Balancer Controller NLB, internet-facing, IP targets (PROXY v2 possible)
  gke:     GKE external passthrough NLB (backend-service based); no PROXY
  metallb: kind and bare metal; no PROXY
  none:    only the annotations given
*/}}
{{- define "devdb.lbAnnotations" -}}
{{- $ctx := .ctx -}}
{{- $lb := $ctx.Values.loadBalancer -}}
{{- $a := dict -}}
{{- if eq $lb.provider "aws" -}}
{{- $_ := set $a "service.beta.kubernetes.io/aws-load-balancer-type" "external" -}}
{{- $_ := set $a "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" "ip" -}}
{{- $_ := set $a "service.beta.kubernetes.io/aws-load-balancer-scheme" (ternary "internal" "internet-facing" $lb.internal) -}}
{{- if and (eq .which "database") $lb.proxyProtocol.enabled -}}
{{- $_ := set $a "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol" "*" -}}
{{- end -}}
{{- /* The NLB's default deregistration delay is 300 s: a rolling update would send new
connections to routers that are gone. router.preStopSeconds stays above this. */ -}}
{{- $_ := set $a "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes" (printf "deregistration_delay.timeout_seconds=%d" (int $lb.deregistrationDelay)) -}}
{{- else if eq $lb.provider "gke" -}}
{{- $_ := set $a "cloud.google.com/l4-rbs" "enabled" -}}
{{- if $lb.internal -}}
{{- $_ := set $a "networking.gke.io/load-balancer-type" "Internal" -}}
{{- end -}}
{{- end -}}
{{- $own := (get $lb .which).annotations | default dict -}}
{{- toJson (merge (deepCopy $own) $a) -}}
{{- end -}}

{{- define "devdb.proxyProtocolFrom" -}}
{{- $pp := .Values.loadBalancer.proxyProtocol -}}
{{- if $pp.enabled -}}
{{- if not (has .Values.loadBalancer.provider (list "aws" "none")) -}}
{{- fail (printf "loadBalancer.proxyProtocol.enabled: the %s preset's load balancer cannot send PROXY protocol; turn it off (externalTrafficPolicy: Local keeps client addresses there)" .Values.loadBalancer.provider) -}}
{{- end -}}
{{- if not $pp.from -}}
{{- fail "loadBalancer.proxyProtocol.from must list the CIDRs the load balancer connects from (with AWS IP targets: the NLB's subnets), so the router trusts headers from exactly those addresses" -}}
{{- end -}}
{{- toJson $pp.from -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The API's DNS name: apiHost, else api.<dbDomain without its first label>. */}}
{{- define "devdb.apiHost" -}}
{{- if .Values.apiHost -}}{{ .Values.apiHost }}{{- else -}}api.{{ regexReplaceAll "^[^.]+\\." .Values.dbDomain "" }}{{- end -}}
{{- end -}}

{{/* The restore pods' service account: the given name, the chart's own when annotations are set, else none. */}}
{{- define "devdb.restoreServiceAccount" -}}
{{- $sa := .Values.databases.restoreServiceAccount -}}
{{- if $sa.name -}}{{ $sa.name }}{{- else if $sa.annotations -}}{{ include "devdb.fullname" . }}-restore{{- end -}}
{{- end -}}

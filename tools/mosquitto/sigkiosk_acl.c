/*
 * sigkiosk_acl: subscription checks for kiosk identities, a mosquitto 2.0 plugin (API version 5).
 *
 * Why: mosquitto 2.0's acl_file never checks SUBSCRIBE (security_default.c answers "success" to
 * every subscription and applies the read ACL only when a message is delivered). For a plain
 * filter that is harmless: nothing the ACL forbids is delivered. For a shared subscription it is
 * not: a kiosk that joins the collectors' group ($share/collectors/...) is handed its share of
 * every kiosk's decisions, the delivery check then refuses them, and they are lost.
 *
 * What: for a kiosk (an MQTT user name without a '.'; collectors and admins are collector.NAME and
 * admin.NAME), a subscription is granted only if its filter lies entirely inside a filter the ACL
 * file lets this user read ("topic read" in its "user" section, or a "pattern read" with %u / %c
 * replaced); never a '$' topic ($share, $SYS, $CONTROL), never a wildcard wider than its own
 * subtree; and never anything matched by a "topic deny" of its user section. Everything else
 * (publish, delivery, unsubscribe, and all service identities) is deferred to the acl_file.
 *
 * On SIGHUP the plugin re-reads the ACL file and disconnects every user whose section says
 * "topic deny #" (a revoked kiosk): its TLS session predates the new CRL, which is only checked
 * when a connection is made.
 *
 * Options: plugin_opt_acl_file <path> (required; the same file as acl_file).
 *
 * Built by tools/broker.py with the system C compiler; the handful of declarations of mosquitto's
 * plugin API it needs are copied below so that no mosquitto-dev package is needed. Their layout is
 * stable across mosquitto 2.x (the event structures reserve "future" fields for that).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mosquitto;
struct mosquitto_opt { char *key; char *value; };
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
typedef struct mqtt5__property mosquitto_property;
struct mosquitto_evt_acl_check {
	void *future;
	struct mosquitto *client;
	const char *topic;
	const void *payload;
	mosquitto_property *properties;
	int access;
	uint32_t payloadlen;
	uint8_t qos;
	bool retain;
	void *future2[4];
};
typedef int (*MOSQ_FUNC_generic_callback)(int, void *, void *);
int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
		const void *event_data, void *userdata);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb_func,
		const void *event_data);
const char *mosquitto_client_username(const struct mosquitto *client);
const char *mosquitto_client_id(const struct mosquitto *client);
int mosquitto_kick_client_by_username(const char *username, bool with_will);
void mosquitto_log_printf(int level, const char *fmt, ...);

enum { MOSQ_EVT_RELOAD = 1, MOSQ_EVT_ACL_CHECK = 2 };
enum { MOSQ_ACL_SUBSCRIBE = 0x04 };
enum { MOSQ_ERR_SUCCESS = 0, MOSQ_ERR_NOMEM = 1, MOSQ_ERR_INVAL = 3, MOSQ_ERR_ACL_DENIED = 12, MOSQ_ERR_PLUGIN_DEFER = 17 };
enum { MOSQ_LOG_NOTICE = 0x02, MOSQ_LOG_ERR = 0x08 };

struct rule {
	char *user;     /* NULL: a pattern (every user) */
	char *filter;
	bool deny;
};

struct rules {
	struct rule *items;
	size_t count;
};

static mosquitto_plugin_id_t *plg_id = NULL;
static char *acl_path = NULL;
static struct rules current = {NULL, 0};

static void rules_free(struct rules *r)
{
	for(size_t i = 0; i < r->count; i++){
		free(r->items[i].user);
		free(r->items[i].filter);
	}
	free(r->items);
	r->items = NULL;
	r->count = 0;
}

static int rules_add(struct rules *r, const char *user, const char *filter, bool deny)
{
	struct rule *items = realloc(r->items, (r->count + 1) * sizeof(struct rule));
	if(!items) return MOSQ_ERR_NOMEM;
	r->items = items;
	items[r->count].user = user ? strdup(user) : NULL;
	items[r->count].filter = strdup(filter);
	items[r->count].deny = deny;
	if((user && !items[r->count].user) || !items[r->count].filter) return MOSQ_ERR_NOMEM;
	r->count++;
	return MOSQ_ERR_SUCCESS;
}

static char *trim(char *s)
{
	while(*s == ' ' || *s == '\t') s++;
	size_t n = strlen(s);
	while(n > 0 && (s[n-1] == '\n' || s[n-1] == '\r' || s[n-1] == ' ' || s[n-1] == '\t')) s[--n] = '\0';
	return s;
}

/* Read the "read", "readwrite" and "deny" rules of an acl_file (its syntax: mosquitto.conf(5)). */
static int rules_load(const char *path, struct rules *out)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	char *user = NULL;
	int rc = MOSQ_ERR_SUCCESS;

	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, "sigkiosk_acl: cannot open ACL file %s", path);
		return MOSQ_ERR_INVAL;
	}
	while(rc == MOSQ_ERR_SUCCESS && fgets(line, sizeof(line), f)){
		char *s = trim(line);
		if(s[0] == '\0' || s[0] == '#') continue;
		char *kw = strtok(s, " \t");
		if(!strcmp(kw, "user")){
			char *name = strtok(NULL, "");
			free(user);
			user = name ? strdup(trim(name)) : NULL;
			continue;
		}
		if(strcmp(kw, "topic") && strcmp(kw, "pattern")) continue;
		bool pattern = !strcmp(kw, "pattern");
		char *access = strtok(NULL, " \t");
		char *filter = strtok(NULL, "");
		if(!access) continue;
		if(!filter){            /* "topic FILTER": read and write */
			filter = access;
			access = "readwrite";
		}
		filter = trim(filter);
		bool deny = !strcmp(access, "deny");
		if(!deny && strcmp(access, "read") && strcmp(access, "readwrite")) continue;
		if(pattern){
			rc = rules_add(out, NULL, filter, deny);
		}else if(user){        /* topic lines before any user line are for anonymous clients: none here */
			rc = rules_add(out, user, filter, deny);
		}
	}
	free(user);
	fclose(f);
	return rc;
}

/* Is every topic that `filter` can match also matched by `rule`? (Both are MQTT topic filters.) */
static bool within(const char *rule, const char *filter)
{
	const char *r = rule, *f = filter;
	for(;;){
		size_t rl = strcspn(r, "/"), fl = strcspn(f, "/");
		if(rl == 1 && r[0] == '#') return true;
		if(fl == 1 && f[0] == '#') return false;          /* the filter reaches further down */
		if(rl == 1 && r[0] == '+'){
			/* any single level of the filter, '+' included */
		}else if(rl != fl || strncmp(r, f, rl) != 0){
			return false;                                  /* a different level, or '+' against a name */
		}
		r += rl;
		f += fl;
		if(*r == '\0' && *f == '\0') return true;
		if(*r == '\0') return false;
		if(*f == '\0') return strcmp(r, "/#") == 0;       /* "a/b" is inside "a/b/#" */
		r++;
		f++;
	}
}

/* The rule's filter with %u (user name) and %c (client id) replaced; NULL if out of memory. */
static char *substitute(const char *filter, const char *username, const char *clientid)
{
	size_t n = strlen(filter) + 1, ul = strlen(username), cl = strlen(clientid);
	for(const char *p = filter; *p; p++){
		if(p[0] == '%' && (p[1] == 'u' || p[1] == 'c')) n += (p[1] == 'u' ? ul : cl);
	}
	char *out = malloc(n), *o = out;
	if(!out) return NULL;
	for(const char *p = filter; *p; p++){
		if(p[0] == '%' && (p[1] == 'u' || p[1] == 'c')){
			const char *v = p[1] == 'u' ? username : clientid;
			memcpy(o, v, strlen(v));
			o += strlen(v);
			p++;
		}else{
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static int refuse(const char *username, const char *filter, const char *why)
{
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "sigkiosk_acl: refused subscription of %s to \"%.200s\": %s",
			username, filter, why);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;

	if(ed->access != MOSQ_ACL_SUBSCRIBE) return MOSQ_ERR_PLUGIN_DEFER;
	const char *username = mosquitto_client_username(ed->client);
	const char *clientid = mosquitto_client_id(ed->client);
	if(!username || strchr(username, '.')) return MOSQ_ERR_PLUGIN_DEFER;   /* service identities */
	if(!clientid || strpbrk(username, "/+#$%") || strpbrk(clientid, "/+#$%")){
		return refuse(username, ed->topic, "user name unfit for topic patterns");
	}
	if(ed->topic[0] == '$') return refuse(username, ed->topic, "'$' topics ($share, $SYS) are not for kiosks");

	for(size_t i = 0; i < current.count; i++){
		struct rule *r = &current.items[i];
		if(r->deny && r->user && !strcmp(r->user, username) && within(r->filter, ed->topic)){
			return refuse(username, ed->topic, "denied by the ACL");
		}
	}
	for(size_t i = 0; i < current.count; i++){
		struct rule *r = &current.items[i];
		if(r->deny) continue;
		if(r->user){
			if(!strcmp(r->user, username) && within(r->filter, ed->topic)) return MOSQ_ERR_PLUGIN_DEFER;
		}else{
			char *mine = substitute(r->filter, username, clientid);
			if(!mine) return MOSQ_ERR_NOMEM;
			bool ok = within(mine, ed->topic);
			free(mine);
			if(ok) return MOSQ_ERR_PLUGIN_DEFER;          /* the acl_file grants it */
		}
	}
	return refuse(username, ed->topic, "outside what this kiosk may read");
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct rules fresh = {NULL, 0};
	(void)event;
	(void)event_data;
	(void)userdata;

	if(rules_load(acl_path, &fresh) != MOSQ_ERR_SUCCESS){
		/* Keep the previous rules: a half-written file must not open anything up. */
		rules_free(&fresh);
		mosquitto_log_printf(MOSQ_LOG_ERR, "sigkiosk_acl: reload of %s failed, keeping the previous rules", acl_path);
		return MOSQ_ERR_SUCCESS;
	}
	rules_free(&current);
	current = fresh;
	for(size_t i = 0; i < current.count; i++){
		struct rule *r = &current.items[i];
		if(r->deny && r->user && !strcmp(r->filter, "#")){
			if(mosquitto_kick_client_by_username(r->user, false) == MOSQ_ERR_SUCCESS){
				mosquitto_log_printf(MOSQ_LOG_NOTICE, "sigkiosk_acl: disconnected %s (denied everything)", r->user);
			}
		}
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "acl_file")) acl_path = strdup(options[i].value);
	}
	if(!acl_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "sigkiosk_acl: plugin_opt_acl_file is required");
		return MOSQ_ERR_INVAL;
	}
	int rc = rules_load(acl_path, &current);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	plg_id = identifier;
	rc = mosquitto_callback_register(plg_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plg_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(plg_id){
		mosquitto_callback_unregister(plg_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		mosquitto_callback_unregister(plg_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	}
	rules_free(&current);
	free(acl_path);
	acl_path = NULL;
	return MOSQ_ERR_SUCCESS;
}

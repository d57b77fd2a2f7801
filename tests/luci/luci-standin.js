'use strict';
/*
 * Test stand-in for the parts of LuCI's client runtime (luci.js, form.js, rpc.js, ui.js) that
 * luci-app-raopd's views use, for tests/luci_browser.rs. LuCI itself cannot be installed on
 * Debian (it needs OpenWrt's rpcd, uhttpd and ucode), so this file gives the views the same
 * API, written from LuCI's documentation, and nothing else:
 *
 * - `L`: bind, resolveDefault, env.sessionid; the module loader (`'require NAME'` directives,
 *   module function compiled with `new Function`, like luci.js); unknown modules throw.
 * - `E` / `dom`: create, append, content with LuCI's rules: a lone string child is set as
 *   innerHTML while strings inside an array become text nodes; a second argument that is not
 *   a plain object (a string, an array) is the children; attributes that are functions become
 *   event listeners, null/undefined ones are left out, objects are set as JSON.
 * - `String.prototype.format`: %s %d %f with flags, width and precision.
 * - `baseclass`, `view` (load → render → footer with Save & Apply / Save / Reset).
 * - `rpc.declare`: ubus JSON-RPC 2.0 `call` to /ubus, `params` and `expect` as in rpc.js.
 * - `poll.add`, `ui.createHandlerFn`, `ui.addNotification`.
 * - `form`: Map, NamedSection and the option classes Value, Flag, ListValue, DynamicList over
 *   the `uci` ubus object (get / set / delete / apply). A DynamicList is one text field with
 *   space-separated items; datatypes are not checked in the browser (the init script's UCI
 *   validation still runs when the settings are applied).
 * After Save & Apply the page reloads, as LuCI does once changes are applied.
 *
 * For the test only: `window.__errors` collects uncaught errors and rejections, and
 * `window.__luciPending` counts button handlers whose promise has not settled.
 */
(function() {
	window.__errors = [];
	window.__luciPending = 0;
	window.addEventListener('error', function(e) { window.__errors.push(String(e.message)); });
	window.addEventListener('unhandledrejection', function(e) { window.__errors.push(String(e.reason)); });

	function isNode(x) { return x instanceof Node; }

	var dom = {
		elem: isNode,
		attr: function(node, attrs) {
			Object.keys(attrs || {}).forEach(function(k) {
				var v = attrs[k];   /* own enumerable properties, as LuCI's hasOwnProperty loop */
				if (v == null)
					return;
				if (typeof v == 'function')
					node.addEventListener(k, v);
				else if (typeof v == 'object')
					node.setAttribute(k, JSON.stringify(v));
				else
					node.setAttribute(k, v);
			});
		},
		append: function(node, children) {
			if (Array.isArray(children)) {
				children.forEach(function(c) {
					if (isNode(c))
						node.appendChild(c);
					else if (c != null)
						node.appendChild(document.createTextNode('' + c));
				});
			}
			else if (typeof children == 'function')
				return dom.append(node, children(node));
			else if (isNode(children))
				node.appendChild(children);
			else if (children != null)
				node.innerHTML = '' + children;   /* LuCI: a lone string is HTML */
			return node.lastChild;
		},
		content: function(node, children) {
			while (node.firstChild)
				node.removeChild(node.firstChild);
			return dom.append(node, children);
		},
		create: function(tag, attrs, children) {
			var el;
			if (!(attrs instanceof Object) || Array.isArray(attrs)) {   /* E(tag, children) */
				children = attrs;
				attrs = null;
			}
			if (Array.isArray(tag)) {
				el = document.createDocumentFragment();
				tag.forEach(function(t) { el.appendChild(isNode(t) ? t : dom.create(t)); });
			}
			else
				el = document.createElement(tag);
			dom.attr(el, attrs);
			dom.append(el, children);
			return el;
		}
	};

	String.prototype.format = function() {
		var args = arguments, i = 0;
		return this.replace(/%(%|(-)?(0)?(\d+)?(?:\.(\d+))?([sdf]))/g,
			function(m, pct, left, zero, width, prec, conv) {
				if (pct == '%')
					return '%';
				var v = args[i++], s;
				if (conv == 's')
					s = (v == null) ? '' : String(v);
				else if (conv == 'd')
					s = String(Math.trunc(Number(v)));
				else
					s = Number(v).toFixed(prec != null ? +prec : 6);
				while (width && s.length < +width)
					s = left ? s + ' ' : ((zero && conv != 's') ? (s[0] == '-' ? '-0' + s.slice(1) : '0' + s) : ' ' + s);
				return s;
			});
	};

	function extend(Base, props) {
		function Class() {
			if (this.__init__)
				this.__init__.apply(this, arguments);
		}
		Class.prototype = Object.create(Base.prototype);
		Object.assign(Class.prototype, props);
		Class.prototype.constructor = Class;
		Class.extend = function(p) { return extend(Class, p); };
		return Class;
	}
	var baseclass = extend(function() {}, {});

	var rpcId = 1;
	function ubus(object, method, args) {
		return fetch('/ubus', {
			method: 'POST',
			headers: { 'Content-Type': 'application/json' },
			body: JSON.stringify({ jsonrpc: '2.0', id: rpcId++, method: 'call',
				params: [ L.env.sessionid, object, method, args || {} ] })
		}).then(function(r) { return r.json(); }).then(function(msg) {
			if (msg.error)
				throw new Error('RPC error: ' + msg.error.message);
			if (!Array.isArray(msg.result) || msg.result[0] !== 0)
				throw new Error('ubus ' + object + '.' + method + ': status ' + (msg.result && msg.result[0]));
			return msg.result[1] || {};
		});
	}

	var rpc = {
		declare: function(o) {
			return function() {
				var args = {}, a = arguments;
				(o.params || []).forEach(function(p, i) {
					if (a[i] !== undefined)
						args[p] = a[i];
				});
				return ubus(o.object, o.method, args).then(function(res) {
					for (var key in (o.expect || {})) {
						if (key != '' && res != null)
							res = res[key];
						if (res == null || typeof res != typeof o.expect[key])
							res = o.expect[key];
						break;
					}
					return o.filter ? o.filter(res, args) : res;
				});
			};
		}
	};

	var poll = {
		add: function(fn, interval) {
			function run() {
				Promise.resolve().then(fn).catch(function(e) { console.error(e); })
					.then(function() { setTimeout(run, interval * 1000); });
			}
			setTimeout(run, interval * 1000);
		}
	};

	var ui = {
		createHandlerFn: function(ctx, fn) {
			var bound = Array.prototype.slice.call(arguments, 2);
			if (typeof fn == 'string')
				fn = ctx[fn];
			return function(ev) {
				var btn = ev.currentTarget, r = fn.apply(ctx, bound.concat([ ev ]));
				if (r && typeof r.then == 'function') {
					btn.classList.add('spinning');
					btn.disabled = true;
					window.__luciPending++;
					r.finally(function() {
						window.__luciPending--;
						btn.classList.remove('spinning');
						btn.disabled = false;
					});
				}
				return r;
			};
		},
		addNotification: function(title, children) {
			var classes = Array.prototype.slice.call(arguments, 2).join(' ');
			var n = dom.create('div', { 'class': 'alert-message ' + classes }, [
				title ? dom.create('h4', {}, [ title ]) : null,
				dom.create('div', {}, children)
			]);
			document.getElementById('notifications').appendChild(n);
			return n;
		}
	};

	/* form: one Map over one UCI config, NamedSections, simple options. */
	function cbid(opt, sid) { return 'cbid.' + opt.map.config + '.' + sid + '.' + opt.option; }

	var AbstractValue = extend(function() {}, {
		__init__: function(section, option, title, description) {
			this.section = section;
			this.map = section.map;
			this.option = option;
			this.title = title;
			this.description = description;
			this.rmempty = true;
			this.keylist = [];
			this.vallist = [];
		},
		value: function(key, label) {
			this.keylist.push(key);
			this.vallist.push(label != null ? label : key);
		},
		cfgvalue: function(sid) {
			var s = this.map.data[sid] || {};
			return s[this.option];
		},
		shown: function(sid) {
			var v = this.cfgvalue(sid);
			return (v == null) ? this.default : v;
		},
		widget: function(sid) { return document.getElementById('widget.' + cbid(this, sid)); },
		formvalue: function(sid) { return this.widget(sid).value.trim(); },
		render: function(sid) {
			var id = cbid(this, sid);
			return dom.create('div', { 'class': 'cbi-value', 'id': 'cbi-' + this.map.config + '-' + sid + '-' + this.option }, [
				dom.create('label', { 'class': 'cbi-value-title', 'for': 'widget.' + id }, [ this.title ]),
				dom.create('div', { 'class': 'cbi-value-field' }, [
					this.renderWidget(sid, id),
					this.description ? dom.create('div', { 'class': 'cbi-value-description' }, this.description) : null
				])
			]);
		},
		renderWidget: function(sid, id) {
			var v = this.shown(sid);
			return dom.create('input', {
				'type': this.password ? 'password' : 'text', 'class': 'cbi-input-text',
				'id': 'widget.' + id, 'name': id, 'placeholder': this.placeholder,
				'value': v != null ? String(v) : ''
			});
		}
	});

	var form = {
		Value: AbstractValue.extend({}),
		Flag: AbstractValue.extend({
			renderWidget: function(sid, id) {
				return dom.create('input', {
					'type': 'checkbox', 'class': 'cbi-input-checkbox', 'id': 'widget.' + id, 'name': id,
					'checked': (this.shown(sid) == '1') ? '' : null
				});
			},
			formvalue: function(sid) { return this.widget(sid).checked ? '1' : '0'; }
		}),
		ListValue: AbstractValue.extend({
			renderWidget: function(sid, id) {
				var v = this.shown(sid);
				return dom.create('select', { 'class': 'cbi-input-select', 'id': 'widget.' + id, 'name': id },
					this.keylist.map(function(k, i) {
						return dom.create('option', { 'value': k, 'selected': (k == v) ? '' : null }, [ this.vallist[i] ]);
					}, this));
			}
		}),
		DynamicList: AbstractValue.extend({
			shown: function(sid) {
				var v = this.cfgvalue(sid);
				return Array.isArray(v) ? v.join(' ') : (v || '');
			},
			formvalue: function(sid) { return this.widget(sid).value.split(/\s+/).filter(Boolean); }
		}),
		NamedSection: extend(function() {}, {
			__init__: function(map, sid, type, title) {
				this.map = map;
				this.sid = sid;
				this.type = type;
				this.title = title;
				this.children = [];
			},
			option: function(Class, option, title, description) {
				var o = new Class(this, option, title, description);
				this.children.push(o);
				return o;
			},
			render: function() {
				return dom.create('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + this.sid }, [
					this.title ? dom.create('h3', {}, [ this.title ]) : null,
					dom.create('div', { 'class': 'cbi-section-node' },
						this.children.map(function(o) { return o.render(this.sid); }, this))
				]);
			}
		}),
		Map: extend(function() {}, {
			__init__: function(config, title, description) {
				this.config = config;
				this.title = title;
				this.description = description;
				this.children = [];
				this.data = {};
			},
			section: function(Class) {
				var s = new Class(this, arguments[1], arguments[2], arguments[3]);
				this.children.push(s);
				return s;
			},
			load: function() {
				return ubus('uci', 'get', { config: this.config }).then(L.bind(function(r) {
					this.data = r.values || {};
				}, this));
			},
			render: function() {
				return this.load().then(L.bind(function() {
					var el = dom.create('div', { 'class': 'cbi-map', 'id': 'cbi-' + this.config }, [
						this.title ? dom.create('h2', { 'name': 'content' }, [ this.title ]) : null,
						this.description ? dom.create('div', { 'class': 'cbi-map-descr' }, this.description) : null
					].concat(this.children.map(function(s) { return s.render(); })));
					el.cbiMap = this;
					return el;
				}, this));
			},
			/* Sends what changed as `uci set` / `uci delete` (staged, like uci.save()). */
			save: function() {
				var calls = [];
				this.children.forEach(function(s) {
					var set = {}, del = [];
					s.children.forEach(function(o) {
						var fv = o.formvalue(s.sid), cv = o.cfgvalue(s.sid);
						var empty = Array.isArray(fv) ? fv.length == 0 : fv === '';
						if (JSON.stringify(fv) === JSON.stringify(cv))
							return;
						if (empty && o.rmempty) {
							if (cv != null)
								del.push(o.option);
						}
						else
							set[o.option] = fv;
					});
					if (Object.keys(set).length)
						calls.push(ubus('uci', 'set', { config: this.config, section: s.sid, values: set }));
					if (del.length)
						calls.push(ubus('uci', 'delete', { config: this.config, section: s.sid, options: del }));
				}, this);
				return Promise.all(calls);
			}
		})
	};

	var view = baseclass.extend({
		__init__: function() {
			var root = document.getElementById('view');
			Promise.resolve(this.load()).then(L.bind(this.render, this)).then(L.bind(function(node) {
				dom.content(root, node);
				root.appendChild(this.addFooter());
			}, this)).catch(function(e) {
				window.__errors.push('view: ' + e);
				dom.content(root, dom.create('p', { 'class': 'alert-message error' }, [ 'view failed: ' + e ]));
			});
		},
		load: function() {},
		render: function() {},
		handleSave: function() {
			var maps = Array.prototype.map.call(document.querySelectorAll('#view .cbi-map'),
				function(el) { return el.cbiMap.save(); });
			return Promise.all(maps);
		},
		handleSaveApply: function(ev) {
			return this.handleSave(ev).then(function() {
				return ubus('uci', 'apply', { rollback: false });
			}).then(function() {
				ui.addNotification(null, dom.create('p', {}, [ 'Configuration changes have been applied.' ]), 'info');
				setTimeout(function() { location.reload(); }, 1000);
			}, function(e) {
				ui.addNotification(null, dom.create('p', {}, [ 'Applying failed: ' + e ]), 'error');
			});
		},
		handleReset: function() { location.reload(); },
		addFooter: function() {
			return dom.create('div', { 'class': 'cbi-page-actions' }, [
				dom.create('button', { 'class': 'cbi-button cbi-button-apply', 'click': ui.createHandlerFn(this, 'handleSaveApply') }, [ 'Save & Apply' ]),
				' ',
				dom.create('button', { 'class': 'cbi-button cbi-button-save', 'click': ui.createHandlerFn(this, 'handleSave') }, [ 'Save' ]),
				' ',
				dom.create('button', { 'class': 'cbi-button cbi-button-reset', 'click': ui.createHandlerFn(this, 'handleReset') }, [ 'Reset' ])
			]);
		}
	});

	var modules = { baseclass: baseclass, dom: dom, form: form, poll: poll, rpc: rpc, ui: ui, view: view };

	var L = {
		env: { sessionid: '00000000000000000000000000000000' },
		bind: function(fn, self) {
			return fn.bind.apply(fn, [ self ].concat(Array.prototype.slice.call(arguments, 2)));
		},
		resolveDefault: function(p, def) {
			return Promise.resolve(p).catch(function() { return def; });
		},
		/* Loads /luci-static/resources/NAME.js (dots as slashes) and runs it with the modules its
		 * 'require' directives name; a class it returns is instantiated, as in luci.js. */
		require: function(name) {
			var url = '/luci-static/resources/' + name.replace(/\./g, '/') + '.js';
			return fetch(url).then(function(r) {
				if (!r.ok)
					throw new Error(url + ': HTTP ' + r.status);
				return r.text();
			}).then(function(src) {
				var names = [], args = [], m, re = /^\s*'require\s+([\w.]+)(?:\s+as\s+(\w+))?';/mg;
				while ((m = re.exec(src)) != null) {
					if (!(m[1] in modules))
						throw new Error(name + " requires '" + m[1] + "', which the stand-in lacks");
					names.push(m[2] || m[1]);
					args.push(modules[m[1]]);
				}
				var res = new Function(names.join(','), src + '\n//# sourceURL=' + url).apply(window, args);
				return (typeof res == 'function') ? new res() : res;
			});
		},
		/* A page with one view (`view`) or LuCI's status overview (`includes`). */
		boot: function(opts) {
			if (opts.view)
				return L.require(opts.view);
			var root = document.getElementById('view');
			return Promise.all(opts.includes.map(function(n) {
				return L.require(n).then(function(inc) {
					return Promise.resolve(inc.load()).then(L.bind(inc.render, inc)).then(function(node) {
						return dom.create('div', { 'class': 'cbi-section' }, [ dom.create('h3', {}, [ inc.title ]), node ]);
					});
				});
			})).then(function(cards) { dom.content(root, cards); }, function(e) {
				window.__errors.push('status include: ' + e);
			});
		}
	};

	window.L = L;
	window.E = dom.create;
	window._ = function(s) { return s; };
})();

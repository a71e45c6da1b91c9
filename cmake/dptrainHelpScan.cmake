# dptrainHelpScan.cmake: reads the built program's own --help texts and writes, at build time,
#   H2M_OUT         a help2man --include file: one man-page section per command holding that
#                   command's --help text verbatim (so `man dptrain` documents every option);
#   COMPLETION_OUT  the bash completion script: COMPLETION_TEMPLATE with the commands, their
#                   options and what each option's argument is, as the help texts say.
# Nothing is written by hand twice, so the page and the completion cannot drift from the
# program. Run as: cmake -DDPTRAIN=<exe> -DH2M_OUT=<file> -DCOMPLETION_TEMPLATE=<file.in>
#                        -DCOMPLETION_OUT=<file> -P dptrainHelpScan.cmake
#
# What is read from a command's --help text (help_<cmd> below):
#  - options: every --name in it; the word after one is its argument when it looks like a
#    metavariable (FILE, N, WxH, D.h5, SPEC|LIST, auto|FILE, IN,H1,...,OUT: an upper-case
#    word, perhaps after lower-case alternatives and before an extension, a list or
#    alternatives). The argument is a file when one of its |-alternatives is FILE or has an
#    extension (D.h5, F.csv), a directory when it is DIR or ends in _DIR (RUN_DIR);
#    lower-case alternatives (auto, on, off, full) are offered as words. F and P are files
#    (convert --train-images F, predict --output P) unless the option's own entry (its line
#    and the deeper-indented lines below it) does not mention a file: then they are a
#    fraction or a probability (train --val-fraction F);
#  - "--X is the same" in an option's entry: X is another name of that option;
#  - "any dptrain CMD option" (bench): CMD's options are this command's too;
#  - the word after "dptrain <cmd>" in the usage lines: lower-case words are sub-commands
#    (synth spirals|line|blobs, convert idx / csv); a file-like metavariable (FILE, A.h5)
#    means the command takes file operands (RUN_DIR: directories).
cmake_minimum_required(VERSION 3.18)
foreach(v DPTRAIN H2M_OUT COMPLETION_TEMPLATE COMPLETION_OUT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "dptrainHelpScan.cmake: -D${v}=... is required")
  endif()
endforeach()

# run_help(<out var> <args>...): the program's stdout for those arguments; fails the build if
# it exits non-zero or prints nothing. On a sanitizer build, LeakSanitizer stays off here: it
# has reported the sanitizer runtime's own thread set-up (pthread_getattr_np in an OpenBLAS
# thread still starting at exit) as a leak, failing the build; the tests check leaks.
function(run_help out)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env ASAN_OPTIONS=detect_leaks=0 "${DPTRAIN}" ${ARGN}
                  OUTPUT_VARIABLE text ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR text STREQUAL "")
    string(JOIN " " args ${ARGN})
    message(FATAL_ERROR "dptrainHelpScan: '${DPTRAIN} ${args}' exited ${rc}:\n${err}")
  endif()
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# Words of a text as a CMake list: characters that CMake lists treat specially ([ ] ;) and
# punctuation around words become blanks.
function(words_of out text)
  string(REGEX REPLACE "[][;()<>'\"]" " " text "${text}")
  string(REGEX REPLACE "[ \t\r\n]+" ";" text "${text}")
  list(FILTER text EXCLUDE REGEX "^$")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# The kind of an argument metavariable: a list of "file", "dir" and lower-case words.
function(arg_kind out metavar)
  set(kind "")
  string(REPLACE "|" ";" alts "${metavar}")
  foreach(a IN LISTS alts)
    if(a STREQUAL "FILE" OR a MATCHES "^[A-Za-z0-9_]+\\.[a-z0-9]+$")
      list(APPEND kind file)
    elseif(a MATCHES "^(F|P)$")
      list(APPEND kind maybe-file)
    elseif(a MATCHES "^([A-Z]+_)?DIR$")
      list(APPEND kind dir)
    elseif(a MATCHES "^[a-z][a-z0-9-]*$")
      list(APPEND kind "word:${a}")
    endif()
  endforeach()
  if(kind STREQUAL "")
    set(kind value)
  endif()
  list(REMOVE_DUPLICATES kind)
  set(${out} "${kind}" PARENT_SCOPE)
endfunction()

run_help(main_help --help)
string(REGEX MATCH "\ncommands:\n(.*)" _ "${main_help}")
set(block "${CMAKE_MATCH_1}")
string(REGEX REPLACE "\n\n.*" "" block "${block}")
string(REPLACE ";" "," block "${block}")
string(REPLACE "\n" ";" lines "${block}")
set(commands "")
foreach(l IN LISTS lines)
  if(l MATCHES "^  ([a-z][a-z-]*) ")
    list(APPEND commands "${CMAKE_MATCH_1}")
  endif()
endforeach()
list(LENGTH commands n_commands)
if(n_commands LESS 2)
  message(FATAL_ERROR "dptrainHelpScan: no command list found in 'dptrain --help':\n${main_help}")
endif()

foreach(cmd IN LISTS commands)
  run_help(help_${cmd} ${cmd} --help)

  # Entries: a line that starts with an option (after blanks) and the lines below it that are
  # indented deeper and do not start with an option. [ ] ; are changed so CMake lists work.
  string(REPLACE ";" "," text "${help_${cmd}}")
  string(REPLACE "[" "{" text "${text}")
  string(REPLACE "]" "}" text "${text}")
  string(REPLACE "\n" ";" lines "${text}")
  set(entry_opts "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^ +(-[a-z], )?--[a-z]")
      string(REGEX REPLACE "^ +" "" head "${line}")
      string(REGEX REPLACE "  .*" "" head "${head}")
      string(REGEX MATCHALL "--[a-z][a-z0-9-]*" entry_opts "${head}")
      foreach(o IN LISTS entry_opts)
        string(APPEND entry_${cmd}_${o} " ${line}")
      endforeach()
    elseif(entry_opts AND line MATCHES "^       +[^ -]")
      foreach(o IN LISTS entry_opts)
        string(APPEND entry_${cmd}_${o} " ${line}")
      endforeach()
    else()
      set(entry_opts "")
    endif()
  endforeach()

  # Options and their arguments, from every --name in the text.
  words_of(w "${help_${cmd}}")
  list(LENGTH w n)
  set(opts_${cmd} "")
  set(i 0)
  while(i LESS n)
    list(GET w ${i} word)
    math(EXPR i "${i} + 1")
    string(REGEX REPLACE "[.,:]+$" "" word "${word}")
    if(NOT word MATCHES "^--[a-z][a-z0-9-]*$")
      continue()
    endif()
    set(opt "${word}")
    set(kind "")
    if(i LESS n)
      list(GET w ${i} next)
      string(REGEX REPLACE "[.,:]+$" "" next "${next}")
      if(next MATCHES "^([a-z]+\\|)*[A-Z][A-Z0-9_]*(x[A-Z]+)?([.,|][A-Za-z0-9_.,|]*)?$")
        arg_kind(kind "${next}")
      endif()
    endif()
    list(APPEND opts_${cmd} "${opt}")
    list(APPEND kind_${cmd}_${opt} ${kind})
  endwhile()
  list(REMOVE_DUPLICATES opts_${cmd})

  # F and P: files unless the option's entry says nothing of a file.
  foreach(o IN LISTS opts_${cmd})
    set(k "${kind_${cmd}_${o}}")
    if("maybe-file" IN_LIST k)
      list(REMOVE_ITEM k maybe-file)
      string(TOLOWER "${entry_${cmd}_${o}}" e)
      if(NOT DEFINED entry_${cmd}_${o} OR e MATCHES "file|director")
        list(APPEND k file)
      else()
        list(APPEND k value)
      endif()
    endif()
    set(kind_${cmd}_${o} "${k}")
  endforeach()
  # "--X is the same": X takes what the entry's option takes.
  foreach(o IN LISTS opts_${cmd})
    string(REGEX MATCHALL "--[a-z][a-z0-9-]* is the same" aliases "${entry_${cmd}_${o}}")
    foreach(al IN LISTS aliases)
      string(REGEX REPLACE " is the same$" "" al "${al}")
      if(NOT al STREQUAL o)
        set(kind_${cmd}_${al} "${kind_${cmd}_${o}}")
      endif()
    endforeach()
  endforeach()

  # Positional operands from the usage lines.
  set(pos_${cmd} "")
  string(REGEX MATCHALL "dptrain ${cmd} [^ \n]+" uses "${help_${cmd}}")
  foreach(u IN LISTS uses)
    string(REGEX REPLACE "^dptrain ${cmd} " "" first "${u}")
    if(first MATCHES "^[a-z][a-z|]*$")
      string(REPLACE "|" ";" subs "${first}")
      foreach(s IN LISTS subs)
        list(APPEND pos_${cmd} "word:${s}")
      endforeach()
    elseif(first MATCHES "^[A-Z]")
      arg_kind(k "${first}")
      list(REMOVE_ITEM k maybe-file value)
      list(APPEND pos_${cmd} ${k})
    endif()
  endforeach()
endforeach()

# "any dptrain CMD option": CMD's options too.
foreach(cmd IN LISTS commands)
  string(REGEX MATCHALL "any dptrain [a-z]+ option" refs "${help_${cmd}}")
  foreach(r IN LISTS refs)
    string(REGEX REPLACE "any dptrain ([a-z]+) option" "\\1" other "${r}")
    if(NOT other IN_LIST commands OR other STREQUAL cmd)
      continue()
    endif()
    foreach(o IN LISTS opts_${other})
      if(NOT o IN_LIST opts_${cmd})
        list(APPEND opts_${cmd} "${o}")
      endif()
      list(APPEND kind_${cmd}_${o} ${kind_${other}_${o}})
    endforeach()
  endforeach()
endforeach()

# --- the bash completion script --------------------------------------------------------------
string(JOIN " " commands_words ${commands})
set(data "# Generated at build time from the --help texts of dptrain ${DPTRAIN_VERSION}.\n")
string(APPEND data "_dptrain_commands() { echo '${commands_words}'; }\n")
string(APPEND data "_dptrain_options() {\n    case $1 in\n")
foreach(cmd IN LISTS commands)
  string(JOIN " " ow ${opts_${cmd}})
  string(APPEND data "    ${cmd}) echo '${ow}' ;;\n")
endforeach()
string(APPEND data "    esac\n}\n")
string(APPEND data "# What follows an option (file, dir, word:W, value; nothing: a flag).\n")
string(APPEND data "_dptrain_optarg() {\n    case \"$1 $2\" in\n")
foreach(cmd IN LISTS commands)
  foreach(o IN LISTS opts_${cmd})
    set(k "${kind_${cmd}_${o}}")
    if(k)
      list(REMOVE_DUPLICATES k)
      list(LENGTH k nk)
      if(nk GREATER 1)
        list(REMOVE_ITEM k value)
      endif()
      string(JOIN " " kw ${k})
      string(APPEND data "    '${cmd} ${o}') echo '${kw}' ;;\n")
    endif()
  endforeach()
endforeach()
string(APPEND data "    esac\n}\n")
string(APPEND data "# What a command's operands are (file, dir, word:W).\n")
string(APPEND data "_dptrain_operands() {\n    case $1 in\n")
foreach(cmd IN LISTS commands)
  if(pos_${cmd})
    list(REMOVE_DUPLICATES pos_${cmd})
    string(JOIN " " pw ${pos_${cmd}})
    string(APPEND data "    ${cmd}) echo '${pw}' ;;\n")
  endif()
endforeach()
string(APPEND data "    esac\n}\n")
set(DPTRAIN_COMPLETION_DATA "${data}")
configure_file("${COMPLETION_TEMPLATE}" "${COMPLETION_OUT}" @ONLY)
file(TOUCH "${COMPLETION_OUT}") # configure_file keeps the time of an unchanged file

# --- the help2man include file -----------------------------------------------------------------
# Each command's help verbatim, in no-fill mode; every line starts with \& so that no text
# line is taken for a roff request or a help2man [section], and - is written \- (a minus, so
# that "--layers" stays ASCII in a UTF-8 terminal and can be searched for).
set(h2m "")
foreach(cmd IN LISTS commands)
  string(TOUPPER "${cmd}" up)
  set(t "${help_${cmd}}")
  string(REPLACE "\\" "\\e" t "${t}")
  string(REPLACE "-" "\\-" t "${t}")
  string(REGEX REPLACE "\n+$" "" t "${t}")
  string(REPLACE "\n" "\n\\&" t "${t}")
  string(APPEND h2m "[COMMAND ${up}]\n")
  string(APPEND h2m "The text of \\fBdptrain ${cmd} \\-\\-help\\fR:\n.PP\n.nf\n\\&${t}\n.fi\n\n")
endforeach()
string(APPEND h2m "[FILES]\n")
string(APPEND h2m "Datasets, model files and checkpoints are HDF5 files; their layouts are documented in\n")
string(APPEND h2m "datasets/README.md of the source tree.\n\n")
string(APPEND h2m "[COPYRIGHT]\n")
string(APPEND h2m "Copyright (c) 2026 the dptrain authors. MIT licence (share/doc/dptrain/LICENSE).\n\n")
string(APPEND h2m "[SEE ALSO]\n")
string(APPEND h2m ".BR mpirun (1),\n.BR h5dump (1)\n")
file(WRITE "${H2M_OUT}" "${h2m}")

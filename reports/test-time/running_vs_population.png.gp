set terminal pngcairo size 800,500 font 'sans,10'
set output 'running_vs_population.png'
set datafile separator ','
set title 'How far the running averages are from the population statistics' noenhanced
set xlabel 'BN momentum (weight of each new batch)'
set ylabel 'mean over units'
set grid
set key below noenhanced
set format x '%g'
set logscale x 10
set logscale y
plot 'test_time.csv' every ::1 using 2:(strcol(1) eq '300 steps' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title '|running mean - population mean| / population std, 300 steps', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '300 steps' ? column(8) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title '|log(running var / population var)|, 300 steps', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title '|running mean - population mean| / population std, 3000 steps', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(8) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title '|log(running var / population var)|, 3000 steps'
